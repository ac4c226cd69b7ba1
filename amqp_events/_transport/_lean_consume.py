"""Consuming on a hot channel: deliveries parsed by hand, acks and rejects written by hand.

The link hands each Basic.Deliver with its content to ``ConsumingChannel.received``, which
starts the consumer's callback in a task of its own, as aiormq did. Acks of one loop turn go
out together, as one Basic.Ack with ``multiple`` for those below every delivery still being
handled (one frame, one broker operation, for many), the others one by one. A reject is written
at once: before any ack that could cover it.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq
import aiormq.abc

from .._topology import DeliveryCallback
from ._amqp_channels import GONE
from ._base import Delivery
from ._frames import Confirm, Delivered, Returned, basic_ack_frame, basic_reject_frame
from ._lean_link import LeanLink

__all__ = ["ConsumingChannel", "LeanDelivery"]

log = logging.getLogger(__name__)


class ConsumingChannel:
    """The channel a session consumes on (a ``HotChannel``): its consumers by tag."""

    def __init__(
        self,
        link: LeanLink,
        channel: aiormq.abc.AbstractChannel,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.number = channel.number
        self.channel = channel  # aiormq's, for the no-op RPC of ack_processed
        self.link = link
        self._loop = loop
        self._consumers: dict[str, DeliveryCallback] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # Delivered, not yet settled: at most the consumers' prefetch, so min() is cheap.
        self._unsettled: set[int] = set()
        self._acks: list[int] = []  # acked in this loop turn, written by write_acks
        self._acks_due = False
        self.failure: BaseException | None = None

    def add(self, consumer_tag: str, callback: DeliveryCallback) -> None:
        """Route ``consumer_tag``'s deliveries to ``callback``: before Basic.Consume goes out."""
        self._consumers[consumer_tag] = callback

    def discard(self, consumer_tag: str) -> None:
        self._consumers.pop(consumer_tag, None)

    def received(self, record: Delivered | Returned | Confirm) -> None:
        if type(record) is not Delivered:
            return  # no publishes on this channel: no confirm nor return can come
        callback = self._consumers.get(record.consumer_tag)
        if callback is None:
            # A consumer cancelled meanwhile: back to its queue, now rather than at the close.
            self.link.write(basic_reject_frame(self.number, record.delivery_tag, requeue=True))
            return
        self._unsettled.add(record.delivery_tag)
        task = asyncio.ensure_future(callback(LeanDelivery(record, self)), loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer callback failed", exc_info=task.exception())

    def closed(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._acks.clear()  # the broker requeues what was not acked
        self._unsettled.clear()

    def ack(self, tag: int) -> None:
        self._unsettled.discard(tag)
        self._acks.append(tag)
        if not self._acks_due:
            self._acks_due = True
            self._loop.call_soon(self.write_acks)

    def reject(self, tag: int, requeue: bool) -> None:
        self._unsettled.discard(tag)
        self.link.write(basic_reject_frame(self.number, tag, requeue=requeue))

    def write_acks(self) -> None:
        """The acks of this turn into the link's buffer: one ``multiple`` ack for those below
        every unsettled delivery (it covers nothing still being handled), the rest alone."""
        self._acks_due = False
        acks = self._acks
        if not acks or self.failure is not None:
            acks.clear()
            return
        self._acks = []
        number = self.number
        if len(acks) == 1:
            self.link.write(basic_ack_frame(number, acks[0]))
            return
        low = min(self._unsettled) if self._unsettled else None
        below = [tag for tag in acks if low is None or tag < low]
        frames = []
        if len(below) > 1:
            frames.append(basic_ack_frame(number, max(below), multiple=True))
            above = [tag for tag in acks if low is not None and tag > low]
        else:
            above = acks
        frames += [basic_ack_frame(number, tag) for tag in above]
        self.link.write(b"".join(frames))


class LeanDelivery(Delivery):
    """What a consumer on RabbitMQ gets: ack and reject go to the channel it came on."""

    __slots__ = ("_channel", "_tag")

    def __init__(self, record: Delivered, channel: ConsumingChannel) -> None:
        props = record.properties
        super().__init__(
            record.body,
            record.routing_key,
            record.exchange,
            props.headers or {},
            record.redelivered,
            props.content_type,
            props.message_id,
            props.correlation_id,
            props.reply_to,
            props.timestamp,
        )
        self._channel = channel
        self._tag = record.delivery_tag

    def _gone(self, what: str) -> bool:
        self.settled = True
        channel = self._channel
        if channel.failure is None:
            return False
        # The channel is gone, so the broker requeues the message itself.
        log.warning(
            "%s of %r failed; the broker redelivers it: %r", what, self.routing_key, channel.failure
        )
        return True

    async def ack(self) -> None:
        if not self._gone("ack"):
            self._channel.ack(self._tag)

    async def reject(self, *, requeue: bool) -> None:
        if not self._gone("reject"):
            self._channel.reject(self._tag, requeue)

    async def ack_processed(self) -> None:
        if self._gone("ack"):
            return
        channel = self._channel
        channel.ack(self._tag)
        channel.write_acks()  # the ack goes before the RPC below
        channel.link.flush()
        try:
            # The broker handles a channel's frames in order, so the answer to this no-op RPC
            # (amq.direct exists in every vhost) means the ack was processed, not just sent.
            await channel.channel.exchange_declare(
                "amq.direct", exchange_type="direct", passive=True
            )
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            log.warning("could not confirm the ack of %r: %r", self.routing_key, exc)
