"""Sessions on the in-memory broker, for ``memory://`` URLs.

The same ``ReconnectingTransport`` runs over them as over RabbitMQ, so what a test shows about
reconnection in memory holds for the real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..._envelope import Envelope
from ..._errors import BrokerConnectionError, BrokerError
from ..._naming import CONTENT_TYPE_JSON
from ..._topology import ConsumerSpec, Topology
from .._base import OutgoingProperties, SessionHooks, publish_refused
from .._wire import check_header_frame
from ._broker import broker_for_url
from ._connection import MemoryConnection
from ._registry import parse_memory_url

__all__ = ["MemoryOpener", "MemorySession"]


class MemoryOpener:
    """Opens sessions on the broker a ``memory://[name]`` URL names."""

    def __init__(self, url: str) -> None:
        parse_memory_url(url)  # ConfigurationError for a malformed memory:// URL
        self._url = url

    async def __call__(self, hooks: SessionHooks) -> MemorySession:
        connection = broker_for_url(self._url).connect()  # BrokerConnectionError if stopped
        return MemorySession(connection, hooks)


class MemorySession:
    """One connection to a ``MemoryBroker``; confirms are immediate."""

    def __init__(self, connection: MemoryConnection, hooks: SessionHooks) -> None:
        self._connection = connection
        self._hooks = hooks
        connection.on_close = self._on_closed
        connection.on_cancel = self._on_cancelled
        # As in AmqpSession: the last headers object whose content header frame fit.
        self._fitting_headers: object = None

    def __repr__(self) -> str:
        return f"MemorySession({self._connection!r})"

    @property
    def is_open(self) -> bool:
        return not self._connection.closed

    @property
    def frame_max(self) -> int:
        return self._connection.broker.frame_max

    def _on_closed(self, error: BaseException) -> None:
        self._hooks.session_lost(self, error)

    def _on_cancelled(self, consumer_tag: str, _queue: str) -> None:
        self._hooks.consumer_cancelled(self, consumer_tag)

    def _open(self, doing: str) -> MemoryConnection:
        if self._connection.closed:
            raise BrokerConnectionError(f"cannot {doing}: {self._connection!r} is closed")
        return self._connection

    async def declare(self, topology: Topology) -> None:
        connection = self._open("declare")
        broker = connection.broker
        for exchange in topology.exchanges:
            broker._declare_exchange_spec(exchange)
        for queue in topology.queues:
            broker._declare_queue_spec(queue, connection=connection)
        for binding in topology.bindings:
            broker._bind_spec(binding, connection=connection)

    async def consume(self, spec: ConsumerSpec) -> str:
        return self._open("consume").consume(
            spec.queue, spec.callback, prefetch=spec.prefetch, exclusive=spec.exclusive
        )

    async def cancel(self, consumer_tag: str) -> None:
        self._open("cancel a consumer").cancel(consumer_tag)

    async def message_count(self, queue: str) -> int:
        return self._open("count messages").broker.queue_info(queue).messages_ready

    def publish_now(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope,
        waiter: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None] | None:
        return None  # the memory broker's publish has no confirm to wait for: publish() it is

    def publish_failure(
        self, exc: Exception, exchange: str, routing_key: str, confirm_timeout: float | None
    ) -> Exception:
        return exc

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope | None = None,
    ) -> None:
        connection = self._open("publish")
        broker = connection.broker
        if properties is not None or headers is not self._fitting_headers:
            fits_any = check_header_frame(
                exchange, routing_key, headers, properties, broker.frame_max, envelope
            )
            if fits_any and properties is None:
                self._fitting_headers = headers
        try:
            # As the AMQP session sends them: JSON unless said otherwise; an envelope's headers
            # over the publish's, its id and time as the properties.
            content_type = (properties and properties.content_type) or CONTENT_TYPE_JSON
            if envelope is None:
                sent, message_id = headers, None  # None: the properties' own, if any
                timestamp = properties.timestamp if properties is not None else None
            else:
                sent = {**headers, **envelope.headers}
                message_id, timestamp = envelope.message_id, envelope.timestamp
            broker.publish(
                exchange,
                routing_key,
                body,
                sent,
                properties,
                mandatory,
                content_type=content_type,
                message_id=message_id,
                timestamp=timestamp,
            )
        except BrokerError as exc:
            # RabbitMQ closes the publish channel and AmqpSession reports a PublishError.
            detail = str(exc).partition(": ")[2]
            raise publish_refused(exchange, exc.reply_code, detail) from None

    async def close(self) -> None:
        if not self._connection.closed:
            self._connection.close()
