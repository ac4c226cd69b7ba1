"""The public snapshots of a broker's state: the memory broker's messages, and queues, exchanges
and bindings in one shape for both brokers (``MemoryBroker`` and ``amqp_events.testing.VhostView``,
which exports them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
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
    timestamp: datetime | None = None  # whole seconds, UTC


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
    """A queue's settings and counters, one shape on both brokers: what
    ``MemoryBroker.queue_info(name)`` returns, and ``VhostView.queue(name)`` and ``queues()``
    (``amqp_events.testing``) on RabbitMQ, so that the two compare equal for the same queue.

    The fields mean what ``rabbitmqctl list_queues`` columns of the same names mean: ``arguments``
    holds the ``x-`` arguments it was declared with (``{}`` when none), ``messages_ready`` and
    ``messages_unacknowledged`` count messages waiting and delivered but not yet settled,
    ``consumers`` the consumers attached.

    Both brokers report every field; none is ever ``None``. One caveat: when ``VhostView`` has to
    use the management API rather than ``rabbitmqctl``, the three counters are the broker's
    statistics, sampled every ``collect_statistics_interval`` (5 s by default): they lag, and
    read 0 for a queue not yet sampled. ``rabbitmqctl`` and the memory broker count live.
    """

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
    """An exchange's settings, one shape on both brokers: what ``MemoryBroker.exchange_info(name)``
    and ``VhostView.exchange(name)`` return (``type`` is ``"direct"``, ``"topic"``, ``"fanout"``
    or ``"headers"``; the default exchange is called ``""``).

    The fields mean what ``rabbitmqctl list_exchanges`` columns of the same names mean. Both
    brokers report every field; none is ever ``None``.
    """

    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A binding of ``queue`` to ``exchange``, one shape on both brokers: what
    ``MemoryBroker.bindings()`` and ``VhostView.bindings()`` list (``arguments`` matter for a
    headers exchange: ``{}`` when none).

    Only explicit queue bindings are listed, on both brokers: not the implicit binding of every
    queue to the default exchange ``""`` (RabbitMQ lists it, the memory broker has none to list),
    nor RabbitMQ's exchange-to-exchange bindings (the memory broker has no such thing). Both
    brokers report every field; none is ever ``None``.
    """

    queue: str
    exchange: str
    routing_key: str
    arguments: Mapping[str, Any]
