"""The public snapshots of the memory broker's state: messages, queues, exchanges and
bindings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BindingInfo", "ExchangeInfo", "MessageProperties", "MessageSnapshot", "QueueInfo"]


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """The AMQP properties of a stored message (``expiration`` in milliseconds)."""

    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: int | None = None
    delivery_mode: int = 2


@dataclass(frozen=True, slots=True)
class MessageSnapshot:
    """A copy of one message as stored in a queue; see ``MemoryBroker.messages`` and ``get``."""

    body: bytes
    exchange: str
    routing_key: str
    headers: Mapping[str, Any]
    properties: MessageProperties
    redelivered: bool


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's settings and counters, as ``rabbitmqctl list_queues`` shows them."""

    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Mapping[str, Any]
    messages_ready: int
    messages_unacknowledged: int
    consumers: int

    @property
    def messages(self) -> int:
        """Ready plus unacknowledged messages, as ``rabbitmqctl``'s ``messages`` column."""
        return self.messages_ready + self.messages_unacknowledged


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """An exchange's settings, as ``rabbitmqctl list_exchanges`` shows them."""

    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A binding of a queue to an exchange, as ``rabbitmqctl list_bindings`` shows it
    (``arguments`` matter for a headers exchange)."""

    queue: str
    exchange: str
    routing_key: str
    arguments: Mapping[str, Any]
