"""A message RabbitMQ delivered to a consumer, settled on the aiormq channel it came on."""

from __future__ import annotations

import logging

import aiormq
import aiormq.abc
from pamqp import commands as spec

from ._amqp_channels import GONE
from ._base import Delivery

__all__ = ["AmqpDelivery"]

log = logging.getLogger(__name__)


class AmqpDelivery(Delivery):
    """What a consumer on RabbitMQ gets: ack and reject go to the channel it came on."""

    __slots__ = ("_channel", "_tag")

    def __init__(self, message: aiormq.abc.DeliveredMessage, channel: aiormq.abc.AbstractChannel):
        frame = message.delivery
        assert isinstance(frame, spec.Basic.Deliver)  # consumers only get basic.deliver
        props = message.header.properties
        super().__init__(
            message.body,
            frame.routing_key or "",
            frame.exchange or "",
            props.headers or {},
            bool(frame.redelivered),
            props.content_type,
            props.message_id,
            props.correlation_id,
            props.reply_to,
            props.timestamp,
        )
        self._channel = channel
        self._tag: int = frame.delivery_tag or 0

    async def ack(self) -> None:
        self.settled = True
        try:
            await self._channel.basic_ack(self._tag)
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            # The channel is gone, so the broker requeues the message itself.
            log.warning("ack of %r failed; the broker redelivers it: %r", self.routing_key, exc)

    async def reject(self, *, requeue: bool) -> None:
        self.settled = True
        try:
            await self._channel.basic_reject(self._tag, requeue=requeue)
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            log.warning("reject of %r failed; the broker redelivers it: %r", self.routing_key, exc)

    async def ack_processed(self) -> None:
        await self.ack()
        try:
            # The broker handles a channel's frames in order, so the answer to this no-op RPC
            # (amq.direct exists in every vhost) means the ack was processed, not just sent.
            await self._channel.exchange_declare("amq.direct", exchange_type="direct", passive=True)
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            log.warning("could not confirm the ack of %r: %r", self.routing_key, exc)
