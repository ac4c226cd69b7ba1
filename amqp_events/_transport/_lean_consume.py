"""Consuming on a hot channel: deliveries parsed by hand, acks and rejects written by hand.

The link hands each Basic.Deliver with its content to ``ConsumingChannel.received``, which
starts the consumer's callback in a task of its own, as aiormq did. ``LeanDelivery.ack`` and
``reject`` write their frame with the others of the loop turn: many acks, one ``send``.
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

    def _settle(self, frame: bytes, what: str) -> bool:
        self.settled = True
        channel = self._channel
        if channel.failure is not None:
            # The channel is gone, so the broker requeues the message itself.
            log.warning(
                "%s of %r failed; the broker redelivers it: %r",
                what,
                self.routing_key,
                channel.failure,
            )
            return False
        channel.link.write(frame)
        return True

    async def ack(self) -> None:
        self._settle(basic_ack_frame(self._channel.number, self._tag), "ack")

    async def reject(self, *, requeue: bool) -> None:
        frame = basic_reject_frame(self._channel.number, self._tag, requeue=requeue)
        self._settle(frame, "reject")

    async def ack_processed(self) -> None:
        if not self._settle(basic_ack_frame(self._channel.number, self._tag), "ack"):
            return
        self._channel.link.flush()  # the ack goes before the RPC below
        try:
            # The broker handles a channel's frames in order, so the answer to this no-op RPC
            # (amq.direct exists in every vhost) means the ack was processed, not just sent.
            await self._channel.channel.exchange_declare(
                "amq.direct", exchange_type="direct", passive=True
            )
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            log.warning("could not confirm the ack of %r: %r", self.routing_key, exc)
