"""A client connection to a ``MemoryBroker``: the public ``MemoryConnection`` and its
broker-side state, the ``Channel`` (consumers, unsettled deliveries, exclusive queues) with the
operations on it (consume, cancel, ack, reject, close)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..._errors import BrokerConnectionError, ConfigurationError
from ..._topology import DeliveryCallback
from . import _refusals as refusals
from ._consumers import Consumer
from ._dead_letters import dead_letter

if TYPE_CHECKING:
    from ._broker import MemoryBroker
    from ._message import Message
    from ._queues import Queue
    from ._vhost import Vhost

__all__ = ["Channel", "MemoryConnection", "channel_of"]

log = logging.getLogger(__name__)

_MAX_PREFETCH: Final = 65535  # basic.qos prefetch-count is a short


class MemoryConnection:
    """A client connection to a ``MemoryBroker`` (one channel): it owns consumers, unsettled
    deliveries and exclusive queues, all released when it closes.

    Hooks, set by the transport: ``on_close(exc)`` when the broker closes the connection
    (``close_all_connections``) and ``on_cancel(consumer_tag, queue)`` when the broker cancels
    a consumer (its queue was deleted).
    """

    def __init__(self, broker: MemoryBroker, channel: Channel) -> None:
        self._broker = broker
        self._channel = channel

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<MemoryConnection {self.name!r} to {self._broker.url} ({state})>"

    @property
    def name(self) -> str:
        """The connection's name (``connection-<n>`` unless given to ``connect``)."""
        return self._channel.name

    @property
    def on_close(self) -> Callable[[BaseException], None] | None:
        """Called with a ``BrokerConnectionError`` when the broker closes the connection."""
        return self._channel.on_close

    @on_close.setter
    def on_close(self, hook: Callable[[BaseException], None] | None) -> None:
        self._channel.on_close = hook

    @property
    def on_cancel(self) -> Callable[[str, str], None] | None:
        """Called with (consumer tag, queue) when the broker cancels a consumer."""
        return self._channel.on_cancel

    @on_cancel.setter
    def on_cancel(self, hook: Callable[[str, str], None] | None) -> None:
        self._channel.on_cancel = hook

    @property
    def broker(self) -> MemoryBroker:
        """The broker this connection belongs to."""
        return self._broker

    @property
    def closed(self) -> bool:
        """Whether the connection was closed, by the client or by the broker."""
        return self._channel.closed

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
        return self._channel.consume(queue, callback, prefetch, exclusive)

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer: no new deliveries; its unsettled ones can still be settled."""
        self._channel.cancel(consumer_tag)

    def ack(self, delivery_tag: int) -> None:
        """Acknowledge a delivery; 406 PRECONDITION_FAILED if the tag is unknown or settled."""
        self._channel.ack(delivery_tag)

    def reject(self, delivery_tag: int, *, requeue: bool) -> None:
        """Reject a delivery: back to its place in the queue, or dead-lettered (or dropped)."""
        self._channel.reject(delivery_tag, requeue=requeue)

    def close(self) -> None:
        """Close: requeue unsettled deliveries, cancel consumers, delete exclusive queues."""
        self._channel.close()


def channel_of(connection: MemoryConnection) -> Channel:
    """The broker-side state of ``connection``."""
    return connection._channel


class Channel:
    """What the broker keeps for one connection: consumers, unsettled deliveries (by
    delivery tag) and exclusive queues, released when it closes."""

    def __init__(self, vhost: Vhost, name: str, url: str) -> None:
        self.vhost = vhost
        self.name = name
        self.url = url  # of the broker, for messages
        self.on_close: Callable[[BaseException], None] | None = None
        self.on_cancel: Callable[[str, str], None] | None = None
        self.closed = False
        self._consumers: dict[str, Consumer] = {}
        self._unacked: dict[int, tuple[Queue, Message, Consumer]] = {}
        self._exclusive: dict[Queue, None] = {}
        self._last_tag = 0

    def check_open(self) -> None:
        """``BrokerConnectionError`` if closed."""
        if self.closed:
            raise BrokerConnectionError(f"connection {self.name!r} to {self.url} is closed")

    # -- what other parts of the broker record and ask ----------------------------------------

    def own(self, q: Queue) -> None:
        """Record ``q`` as exclusive to this connection (deleted when it closes)."""
        self._exclusive[q] = None

    def disown(self, q: Queue) -> None:
        """Forget the exclusive queue ``q`` (deleted)."""
        self._exclusive.pop(q, None)

    def add_delivery(self, q: Queue, message: Message, consumer: Consumer) -> int:
        """Record ``message`` delivered to ``consumer`` from ``q``, unsettled; its tag."""
        self._last_tag += 1
        self._unacked[self._last_tag] = (q, message, consumer)
        return self._last_tag

    def unsettled(self, delivery_tag: int) -> Message | None:
        """The message of an unsettled delivery, or None."""
        entry = self._unacked.get(delivery_tag)
        return None if entry is None else entry[1]

    def unsettled_count(self) -> int:
        """How many deliveries are unsettled."""
        return len(self._unacked)

    def cancelled_by_broker(self, consumer_tag: str, queue: str) -> None:
        """Forget a consumer whose queue was deleted and call the ``on_cancel`` hook."""
        self._consumers.pop(consumer_tag, None)
        if self.on_cancel is not None:
            try:
                self.on_cancel(consumer_tag, queue)
            except Exception:
                log.exception("on_cancel hook of connection %r failed", self.name)

    def closed_by_broker(self, error: BaseException) -> None:
        """Close (as ``close``) and call the ``on_close`` hook with ``error``."""
        self.close()
        if self.on_close is not None:
            try:
                self.on_close(error)
            except Exception:
                log.exception("on_close hook of connection %r failed", self.name)

    def drop(self) -> None:
        """Forget everything without requeueing or notifying (the broker's ``reset``)."""
        self.closed = True
        self._consumers.clear()
        self._unacked.clear()
        self._exclusive.clear()

    # -- consuming and settling ----------------------------------------------------------------

    def consume(
        self, queue: str, callback: DeliveryCallback, prefetch: int, exclusive: bool
    ) -> str:
        self.check_open()
        if type(prefetch) is not int or not 0 <= prefetch <= _MAX_PREFETCH:
            raise ConfigurationError(
                f"prefetch for queue {queue!r} must be an int from 0 (unlimited) to "
                f"{_MAX_PREFETCH}, got {prefetch!r}"
            )
        q = self.vhost.queue_or_404(queue)
        if q.owner is not None and q.owner is not self:
            raise refusals.resource_locked(q.name)
        # A single-active-consumer queue refuses exclusive consumers, even with none yet.
        if (exclusive and q.single_active) or (
            q.consumers and (exclusive or any(c.exclusive for c in q.consumers))
        ):
            raise refusals.exclusive_use(q.name)
        tag = f"amq.ctag-{next(self.vhost.consumer_ids)}"
        consumer = Consumer(tag, q, self, callback, prefetch, exclusive)
        self._consumers[tag] = consumer
        q.add_consumer(consumer)
        q.dispatch()
        q.expire_head()
        return tag

    def cancel(self, tag: str) -> None:
        consumer = self._consumers.pop(tag, None)
        if consumer is None:
            return  # RabbitMQ answers cancel-ok for unknown tags too
        q = consumer.queue
        q.remove_consumer(consumer)
        self.vhost.after_consumer_left(q)
        if q.single_active and not q.deleted:
            # The next consumer takes over at once. (RabbitMQ 3.10 only activates it: it
            # gets nothing until something else runs the queue, and a publish to the still
            # non-empty queue then crashes the queue process. Not copied.)
            q.dispatch()
        self.vhost.wake()

    def _pop_unacked(self, tag: int) -> tuple[Queue, Message, Consumer]:
        entry = self._unacked.pop(tag, None)
        if entry is None:
            raise refusals.unknown_delivery_tag(tag)
        q, _message, consumer = entry
        q.settled(consumer)
        return entry

    def ack(self, tag: int) -> None:
        q, _message, _consumer = self._pop_unacked(tag)
        if not q.deleted:
            q.dispatch()
            q.expire_head()
        self.vhost.wake()

    def reject(self, tag: int, *, requeue: bool) -> None:
        q, message, _consumer = self._pop_unacked(tag)
        if not q.deleted:
            if requeue:
                q.requeue(message)
                q.after_requeue()
            else:
                dead_letter(self.vhost, q, message, "rejected")
            q.dispatch()
            q.expire_head()
        self.vhost.wake()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        vhost = self.vhost
        vhost.channels.pop(self, None)
        consumers = list(self._consumers.values())
        self._consumers.clear()
        # Detach consumers before requeueing so nothing is redelivered to this connection.
        for consumer in consumers:
            consumer.queue.remove_consumer(consumer)
        unacked, self._unacked = self._unacked, {}
        touched: dict[Queue, None] = {}
        for q, message, consumer in unacked.values():
            q.settled(consumer)
            if not q.deleted:
                q.requeue(message)
                touched[q] = None
        for consumer in consumers:
            vhost.after_consumer_left(consumer.queue)
            touched[consumer.queue] = None  # a single active consumer may have left
        for q in list(self._exclusive):
            vhost.delete_queue(q)
        for q in touched:
            if not q.deleted:
                q.after_requeue()
                q.dispatch()
                q.expire_head()
        log.debug(
            "memory broker %r: connection %r closed, %d deliveries requeued",
            vhost.name,
            self.name,
            len(unacked),
        )
        vhost.wake()
