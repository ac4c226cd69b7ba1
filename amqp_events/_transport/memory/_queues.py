"""Queues as RabbitMQ 3.10 keeps them: FIFO with requeue at the original place, message and
queue TTLs that expire from the head, ``x-max-length`` and ``x-max-length-bytes`` overflow,
``x-expires``, and the differences of quorum queues."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from ..._topology import QueueSpec
from ._clock import Timer, running_loop
from ._consumers import Consumer, Consumers, deliver
from ._dead_letters import dead_letter
from ._info import MessageSnapshot, QueueInfo
from ._limits import length_limits, ready_bytes
from ._message import Message

if TYPE_CHECKING:
    from ._connection import Channel
    from ._exchanges import BindKey
    from ._vhost import Vhost

__all__ = ["Queue"]

log = logging.getLogger(__name__)


def _seq_of(message: Message) -> int:
    return message.seq


class Queue:
    """A queue of a ``MemoryBroker``: its settings, ready messages, consumers and timers."""

    __slots__ = (
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
        "limits",
        "message_ttl",
        "name",
        "next_seq",
        "owner",
        "quorum",
        "ready",
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
        # x-single-active-consumer: only the earliest consumer still there gets messages.
        self.single_active = args.get("x-single-active-consumer") is True
        # A quorum queue: requeued messages go to the back, counted (x-delivery-count,
        # x-delivery-limit); reject-publish lets it go one over its limit.
        self.quorum = args.get("x-queue-type") == "quorum"
        self.delivery_limit: int | None = args.get("x-delivery-limit") if self.quorum else None
        self.limits = length_limits(args, quorum=self.quorum)  # None: no length limit
        self.ready: deque[Message] = deque()
        self.consumers = Consumers(single_active=self.single_active)
        self.unacked = 0
        self.next_seq = 0
        self.bindings: set[tuple[str, BindKey]] = set()
        self.deleted = False
        self.ttl_timer: Timer | None = None
        self.ttl_when = 0.0
        self.ttl_loop: asyncio.AbstractEventLoop | None = None
        self.expiry_timer: Timer | None = None

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
        consumers = self.consumers.clear()
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

    @property
    def had_consumer(self) -> bool:
        """Whether it ever had a consumer (an auto-delete queue goes with its last one)."""
        return self.consumers.had_any

    def add_consumer(self, consumer: Consumer) -> None:
        """Start serving ``consumer`` (at the tail of the round robin); stop ``x-expires``."""
        self.consumers.add(consumer)
        self.disarm_expiry()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Stop serving ``consumer``; its unsettled deliveries can still be settled."""
        self.consumers.remove(consumer)

    def settled(self, consumer: Consumer) -> None:
        """Count one delivery to ``consumer`` settled (for the queue: nothing once deleted)."""
        self.consumers.settled(consumer)
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
        limits = self.limits
        if limits is not None and limits.refuses(ready, message):
            if limits.overflow == "reject-publish-dlx":
                dead_letter(self.vhost, self, message, "maxlen")
            return False
        ttl = self.message_ttl
        expiration = message.expiration
        if expiration is not None and (ttl is None or expiration < ttl):
            ttl = expiration
        if ttl is not None:
            message.expires_at = self.vhost.clock.now() + ttl / 1000
        message.seq = self.next_seq
        self.next_seq += 1
        if not ready and self.consumers:
            # A consumer with room takes a fresh message at once, before max-length or a zero
            # TTL could drop it: RabbitMQ's deliver-or-enqueue. (With ready messages, every
            # consumer is already at its prefetch limit.)
            loop = running_loop()
            consumer = self.consumers.next() if loop is not None else None
            if loop is not None and consumer is not None:
                self._deliver(loop, consumer, message)
                return True
        ready.append(message)
        if limits is not None:
            limits.took(ready)
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
                    now = self.vhost.clock.now()
                if message.expires_at <= now:
                    ready.popleft()
                    dead_letter(self.vhost, self, message, "expired")
                    continue
            consumer = consumers.next()
            if consumer is None:
                return  # every consumer is at its prefetch limit
            ready.popleft()
            self._deliver(loop, consumer, message)

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, consumer: Consumer, message: Message
    ) -> None:
        self.unacked += 1
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

    def drop_head(self) -> None:
        """Dead-letter (or drop) messages from the head of a ``drop-head`` queue while it is
        over ``x-max-length`` or ``x-max-length-bytes``: after a publish, and after a requeue,
        which can push a queue over its limit too (then the requeued message may be the one
        that goes)."""
        limits = self.limits
        if limits is None or not limits.drop_head:
            return
        ready = self.ready
        size = ready_bytes(ready) if limits.max_bytes is not None else 0
        # Dead-lettering never comes back to this queue: that would be a cycle, which is dropped.
        while ready and limits.over(ready, size):
            message = ready.popleft()
            size -= len(message.body)
            dead_letter(self.vhost, self, message, "maxlen")

    def limits_text(self) -> str:
        """Its length limits and overflow, for messages."""
        return "" if self.limits is None else self.limits.describe()

    # -- message TTL ---------------------------------------------------------------------------

    def expire_head(self) -> None:
        """Dead-letter expired messages at the head and arm a timer for the next one.

        RabbitMQ only expires messages at the head of a queue: a message with a short TTL
        behind one without waits for it.
        """
        ready = self.ready
        if not ready or ready[0].expires_at is None:
            return
        now = self.vhost.clock.now()
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
        self.ttl_timer = self.vhost.clock.call_at(loop, when, self._on_ttl_timer, pulls=True)

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
        # It counts on the broker's clock, but does not pull a virtual clock ahead by itself.
        clock = self.vhost.clock
        when = clock.now() + self.expires / 1000
        self.expiry_timer = clock.call_at(loop, when, self._on_expired, pulls=False)

    def disarm_expiry(self) -> None:
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None

    def _on_expired(self) -> None:
        self.expiry_timer = None
        if not self.deleted and not self.consumers:
            log.debug("memory broker %r: queue %r expired (x-expires)", self.vhost.name, self.name)
            self.vhost.delete_queue(self)
