"""Queues as RabbitMQ 3.10 keeps them: FIFO with requeue at the original place, message and
queue TTLs that expire from the head, ``x-max-length`` and ``x-max-length-bytes`` overflow,
``x-expires``, and the differences of quorum queues."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..._topology import QueueSpec
from ._consumers import Consumer, deliver, next_consumer
from ._dead_letters import dead_letter
from ._info import MessageSnapshot, QueueInfo
from ._message import Message

if TYPE_CHECKING:
    from ._connection import Channel
    from ._exchanges import BindKey
    from ._vhost import Vhost

__all__ = ["Queue", "running_loop"]

log = logging.getLogger(__name__)


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _seq_of(message: Message) -> int:
    return message.seq


class Queue:
    """A queue of a ``MemoryBroker``: its settings, ready messages, consumers and timers."""

    __slots__ = (
        "active",
        "arguments",
        "auto_delete",
        "bindings",
        "consumers",
        "deleted",
        "delivery_limit",
        "dlrk",
        "dlx",
        "durable",
        "exclusive",
        "expires",
        "expiry_timer",
        "had_consumer",
        "max_bytes",
        "max_length",
        "message_ttl",
        "name",
        "next_seq",
        "overflow",
        "owner",
        "quorum",
        "ready",
        "rejecting",
        "single_active",
        "ttl_loop",
        "ttl_timer",
        "ttl_when",
        "unacked",
        "vhost",
    )

    def __init__(
        self,
        vhost: Vhost,
        spec: QueueSpec,
        name: str,
        owner: Channel | None,
    ) -> None:
        args: dict[str, Any] = dict(spec.arguments)
        self.vhost = vhost
        self.name = name
        self.durable = spec.durable
        self.exclusive = spec.exclusive
        self.auto_delete = spec.auto_delete
        self.arguments = args
        self.owner = owner
        self.message_ttl: int | None = args.get("x-message-ttl")
        self.expires: int | None = args.get("x-expires")
        self.dlx: str | None = args.get("x-dead-letter-exchange")
        self.dlrk: str | None = args.get("x-dead-letter-routing-key")
        self.max_length: int | None = args.get("x-max-length")
        self.max_bytes: int | None = args.get("x-max-length-bytes")  # bodies of ready messages
        self.overflow: str = args.get("x-overflow", "drop-head")
        # x-single-active-consumer: only the earliest consumer still there gets messages.
        self.single_active = args.get("x-single-active-consumer") is True
        # A quorum queue: requeued messages go to the back, counted (x-delivery-count,
        # x-delivery-limit); reject-publish lets it go one over its limit.
        self.quorum = args.get("x-queue-type") == "quorum"
        self.delivery_limit: int | None = args.get("x-delivery-limit") if self.quorum else None
        self.rejecting = False  # a full quorum queue refusing publishes (reject-publish)
        self.ready: deque[Message] = deque()
        self.consumers: list[Consumer] = []  # in the order they started
        # The round robin: the head is served next and goes to the tail once served.
        self.active: deque[Consumer] = deque()
        self.unacked = 0
        self.had_consumer = False
        self.next_seq = 0
        self.bindings: set[tuple[str, BindKey]] = set()
        self.deleted = False
        self.ttl_timer: asyncio.TimerHandle | None = None
        self.ttl_when = 0.0
        self.ttl_loop: asyncio.AbstractEventLoop | None = None
        self.expiry_timer: asyncio.TimerHandle | None = None

    def info(self) -> QueueInfo:
        return QueueInfo(
            name=self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=dict(self.arguments),
            messages_ready=len(self.ready),
            messages_unacknowledged=self.unacked,
            consumers=len(self.consumers),
        )

    def cancel_timers(self) -> None:
        if self.ttl_timer is not None:
            self.ttl_timer.cancel()
            self.ttl_timer = None
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None

    @property
    def busy(self) -> bool:
        """Whether it has consumers and ready messages (not idle)."""
        return bool(self.consumers and self.ready)

    def drop(self) -> None:
        """Mark it deleted and stop its timers, keeping everything else (a broker reset)."""
        self.deleted = True
        self.cancel_timers()

    def delete(self) -> tuple[list[tuple[str, BindKey]], list[Consumer], int]:
        """Mark it deleted, stop its timers and forget bindings, consumers and ready
        messages; return the bindings (exchange, key) and consumers it had, and how many
        ready messages."""
        self.deleted = True
        bindings = list(self.bindings)
        self.bindings.clear()
        consumers = list(self.consumers)
        for consumer in consumers:
            consumer.blocked = False
        self.consumers.clear()
        self.active.clear()
        self.cancel_timers()
        count = len(self.ready)
        self.ready.clear()
        return bindings, consumers, count

    def bound(self, exchange: str, key: BindKey) -> None:
        """Record a binding to it from ``exchange``."""
        self.bindings.add((exchange, key))

    def unbound(self, exchange: str, key: BindKey | None = None) -> None:
        """Forget a binding from ``exchange`` (every binding from it when ``key`` is None)."""
        if key is not None:
            self.bindings.discard((exchange, key))
        else:
            self.bindings = {(xn, k) for xn, k in self.bindings if xn != exchange}

    def settled(self) -> None:
        """Count one unsettled delivery settled (nothing once deleted)."""
        if not self.deleted:
            self.unacked -= 1

    def snapshots(self) -> list[MessageSnapshot]:
        """Copies of its ready messages, head first."""
        self.expire_head()
        return [message.snapshot(count=self.quorum) for message in self.ready]

    def get(self) -> MessageSnapshot | None:
        """Remove the head message (basic.get, no ack) and return a copy, or None."""
        self.expire_head()
        self.arm_expiry()  # basic.get counts as use for x-expires
        if not self.ready:
            return None
        message = self.ready.popleft()
        self.expire_head()
        return message.snapshot(count=self.quorum)

    def purge(self) -> int:
        """Drop the ready messages (unacked ones stay); return how many."""
        count = len(self.ready)
        self.ready.clear()
        return count

    # -- in and out ----------------------------------------------------------------------------

    def enqueue(self, message: Message) -> bool:
        """Take a routed message; False when a full reject-publish queue refused it."""
        ready = self.ready
        limited = self.max_length is not None or self.max_bytes is not None
        if limited and self.overflow != "drop-head" and self._refuses(message):
            if self.overflow == "reject-publish-dlx":
                dead_letter(self.vhost, self, message, "maxlen")
            return False
        ttl = self.message_ttl
        expiration = message.expiration
        if expiration is not None and (ttl is None or expiration < ttl):
            ttl = expiration
        if ttl is not None:
            message.expires_at = time.monotonic() + ttl / 1000
        message.seq = self.next_seq
        self.next_seq += 1
        if not ready and self.consumers:
            # A consumer with room takes a fresh message at once, before max-length or a zero
            # TTL could drop it: RabbitMQ's deliver-or-enqueue. (With ready messages, every
            # consumer is already at its prefetch limit.)
            loop = running_loop()
            consumer = next_consumer(self) if loop is not None else None
            if loop is not None and consumer is not None:
                deliver(self.vhost, loop, self, consumer, message)
                return True
        ready.append(message)
        if limited:
            if self.quorum and self.overflow != "drop-head" and self._over_limit():
                self.rejecting = True
            self.drop_head()
        if ready and ready[0].expires_at is not None:
            self.expire_head()
        return True

    def dispatch(self) -> None:
        """Hand ready messages to consumers with room, round-robin, in FIFO order."""
        consumers = self.consumers
        ready = self.ready
        if not consumers or not ready:
            return
        loop = running_loop()
        if loop is None:
            return  # no loop to run callbacks on: the messages wait for the next dispatch
        now: float | None = None
        while ready and consumers:
            message = ready[0]
            if message.expires_at is not None:
                if now is None:
                    now = time.monotonic()
                if message.expires_at <= now:
                    ready.popleft()
                    dead_letter(self.vhost, self, message, "expired")
                    continue
            consumer = next_consumer(self)
            if consumer is None:
                return  # every consumer is at its prefetch limit
            ready.popleft()
            deliver(self.vhost, loop, self, consumer, message)

    def requeue(self, message: Message) -> None:
        """Put ``message`` back where it was (usually the head), marked redelivered.

        A quorum queue puts it at the back instead, and counts it: past ``x-delivery-limit``
        it is dead-lettered.
        """
        message.redelivered = True
        ready = self.ready
        if self.quorum:
            message.delivery_count += 1
            limit = self.delivery_limit
            if limit is not None and message.delivery_count > limit:
                dead_letter(self.vhost, self, message, "delivery_limit")
                return
            ready.append(message)  # RabbitMQ 3.10's quorum queues return to the back
            return
        if not ready or message.seq < ready[0].seq:
            ready.appendleft(message)
        elif message.seq > ready[-1].seq:
            ready.append(message)
        else:
            ready.insert(bisect.bisect_left(ready, message.seq, key=_seq_of), message)

    def after_requeue(self) -> None:
        """Drop from the head what requeued messages pushed over the limits; a quorum queue
        does not check its limits on a return."""
        if not self.quorum:
            self.drop_head()

    # -- length limits -------------------------------------------------------------------------

    def _refuses(self, message: Message) -> bool:
        """Whether a full reject-publish queue refuses ``message``.

        A classic queue refuses a message that would take it over its limit. A quorum queue
        takes it, and refuses what comes once it is over the limit, until it is back at 80%
        of it (RabbitMQ 3.10's rabbit_fifo soft limit).
        """
        if not self.quorum:
            return self._would_overflow(message)
        if self.rejecting and self._below_soft_limit():
            self.rejecting = False
        return self.rejecting

    def drop_head(self) -> None:
        """Dead-letter (or drop) messages from the head of a ``drop-head`` queue while it is
        over ``x-max-length`` or ``x-max-length-bytes``: after a publish, and after a requeue,
        which can push a queue over its limit too (then the requeued message may be the one
        that goes)."""
        if self.overflow != "drop-head":
            return
        max_length, max_bytes = self.max_length, self.max_bytes
        if max_length is None and max_bytes is None:
            return
        ready = self.ready
        size = self._ready_bytes() if max_bytes is not None else 0
        # Dead-lettering never comes back to this queue: that would be a cycle, which is dropped.
        while ready and (
            (max_length is not None and len(ready) > max_length)
            or (max_bytes is not None and size > max_bytes)
        ):
            message = ready.popleft()
            size -= len(message.body)
            dead_letter(self.vhost, self, message, "maxlen")

    def _ready_bytes(self) -> int:
        """The body bytes of the ready messages: what ``x-max-length-bytes`` bounds."""
        return sum(len(message.body) for message in self.ready)

    def _would_overflow(self, message: Message) -> bool:
        if self.max_length is not None and len(self.ready) + 1 > self.max_length:
            return True
        return (
            self.max_bytes is not None and self._ready_bytes() + len(message.body) > self.max_bytes
        )

    def _over_limit(self) -> bool:
        if self.max_length is not None and len(self.ready) > self.max_length:
            return True
        return self.max_bytes is not None and self._ready_bytes() > self.max_bytes

    def _below_soft_limit(self) -> bool:
        if self.max_length is not None and len(self.ready) > int(self.max_length * 0.8):
            return False
        return self.max_bytes is None or self._ready_bytes() <= int(self.max_bytes * 0.8)

    def limits(self) -> str:
        """Its length limits, for messages."""
        limits = []
        if self.max_length is not None:
            limits.append(f"x-max-length {self.max_length}")
        if self.max_bytes is not None:
            limits.append(f"x-max-length-bytes {self.max_bytes}")
        return ", ".join(limits)

    # -- message TTL ---------------------------------------------------------------------------

    def expire_head(self) -> None:
        """Dead-letter expired messages at the head and arm a timer for the next one.

        RabbitMQ only expires messages at the head of a queue: a message with a short TTL
        behind one without waits for it.
        """
        ready = self.ready
        if not ready or ready[0].expires_at is None:
            return
        now = time.monotonic()
        while ready:
            expires_at = ready[0].expires_at
            if expires_at is None:
                return
            if expires_at > now:
                self._schedule_ttl(expires_at)
                return
            dead_letter(self.vhost, self, ready.popleft(), "expired")

    def _schedule_ttl(self, when: float) -> None:
        loop = running_loop()
        if loop is None:
            return  # no loop: expiry happens at the next operation on the queue
        timer = self.ttl_timer
        if timer is not None:
            if self.ttl_when <= when and self.ttl_loop is loop and not timer.cancelled():
                return  # an earlier timer fires first and reschedules
            timer.cancel()
        self.ttl_when = when
        self.ttl_loop = loop
        self.ttl_timer = loop.call_later(max(0.0, when - time.monotonic()), self._on_ttl_timer)

    def _on_ttl_timer(self) -> None:
        self.ttl_timer = None
        if not self.deleted:
            self.expire_head()
            self.vhost.wake()

    # -- x-expires -----------------------------------------------------------------------------

    def arm_expiry(self) -> None:
        """(Re)start the ``x-expires`` countdown of an unused queue."""
        if self.expires is None:
            return
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        if self.consumers:
            return
        loop = running_loop()
        if loop is None:
            return  # declared outside a loop: it cannot expire until used from one
        self.expiry_timer = loop.call_later(self.expires / 1000, self._on_expired)

    def disarm_expiry(self) -> None:
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None

    def _on_expired(self) -> None:
        self.expiry_timer = None
        if not self.deleted and not self.consumers:
            log.debug("memory broker %r: queue %r expired (x-expires)", self.vhost.name, self.name)
            self.vhost.delete_queue(self)
