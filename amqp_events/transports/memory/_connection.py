"""A client connection to a ``MemoryBroker``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..._errors import BrokerConnectionError
from ..._topology import DeliveryCallback

if TYPE_CHECKING:
    from ._broker import MemoryBroker
    from ._consumers import Consumer
    from ._message import Message
    from ._queues import Queue

__all__ = ["MemoryConnection"]

log = logging.getLogger("amqp_events.transports.memory")


class MemoryConnection:
    """A client connection to a ``MemoryBroker`` (one channel): it owns consumers, unsettled
    deliveries and exclusive queues, all released when it closes.

    Hooks, set by the transport: ``on_close(exc)`` when the broker closes the connection
    (``close_all_connections``) and ``on_cancel(consumer_tag, queue)`` when the broker cancels
    a consumer (its queue was deleted).
    """

    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self._broker = broker
        self.name = name
        self.on_close: Callable[[BaseException], None] | None = None
        self.on_cancel: Callable[[str, str], None] | None = None
        self._closed = False
        self._consumers: dict[str, Consumer] = {}
        self._unacked: dict[int, tuple[Queue, Message, Consumer]] = {}
        self._exclusive: dict[Queue, None] = {}
        self._last_tag = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryConnection {self.name!r} to {self._broker.url} ({state})>"

    @property
    def broker(self) -> MemoryBroker:
        """The broker this connection belongs to."""
        return self._broker

    @property
    def closed(self) -> bool:
        """Whether the connection was closed, by the client or by the broker."""
        return self._closed

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        prefetch: int = 0,
        exclusive: bool = False,
    ) -> str:
        """Start a consumer on ``queue`` and return its tag.

        ``prefetch`` bounds its unsettled deliveries (0: unlimited). ``exclusive`` fails with
        403 ACCESS_REFUSED if the queue has other consumers, as does consuming a queue that has
        an exclusive consumer; a queue exclusive to another connection gives 405.
        """
        return self._broker._consume(self, queue, callback, prefetch, exclusive)

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer: no new deliveries; its unsettled ones can still be settled."""
        self._broker._cancel(self, consumer_tag)

    def ack(self, delivery_tag: int) -> None:
        """Acknowledge a delivery; 406 PRECONDITION_FAILED if the tag is unknown or settled."""
        self._broker._ack(self, delivery_tag)

    def reject(self, delivery_tag: int, *, requeue: bool) -> None:
        """Reject a delivery: back to its place in the queue, or dead-lettered (or dropped)."""
        self._broker._reject(self, delivery_tag, requeue)

    def close(self) -> None:
        """Close: requeue unsettled deliveries, cancel consumers, delete exclusive queues."""
        self._broker._close_connection(self)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerConnectionError(f"connection {self.name!r} to {self._broker.url} is closed")

    def _notify_closed(self, error: BaseException) -> None:
        if self.on_close is not None:
            try:
                self.on_close(error)
            except Exception:
                log.exception("on_close hook of connection %r failed", self.name)

    def _notify_cancelled(self, consumer_tag: str, queue: str) -> None:
        if self.on_cancel is not None:
            try:
                self.on_cancel(consumer_tag, queue)
            except Exception:
                log.exception("on_cancel hook of connection %r failed", self.name)
