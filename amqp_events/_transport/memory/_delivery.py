"""The ``Delivery`` a memory broker's consumer callback gets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._base import Delivery

if TYPE_CHECKING:
    from ._connection import Channel
    from ._message import Message

__all__ = ["MemoryDelivery"]

log = logging.getLogger(__name__)


class MemoryDelivery(Delivery):
    """A delivery from the memory broker; settling goes straight to the broker."""

    __slots__ = ("_connection", "_tag")

    def __init__(self, connection: Channel, tag: int, message: Message) -> None:
        super().__init__(
            message.body,
            message.routing_keys[0],
            message.exchange,
            message.delivered_headers(),  # a handler's changes must not reach a requeued copy
            message.redelivered,
            message.content_type,
            message.message_id,
            message.correlation_id,
            message.reply_to,
            message.timestamp,
        )
        self._connection = connection
        self._tag = tag

    async def ack(self) -> None:
        self.settled = True
        if self._connection.closed:
            # The broker requeued the message when the connection closed; nothing to settle.
            log.debug("ack of delivery %d ignored: its connection is closed", self._tag)
            return
        self._connection.ack(self._tag)

    async def reject(self, *, requeue: bool) -> None:
        self.settled = True
        if self._connection.closed:
            log.debug("reject of delivery %d ignored: its connection is closed", self._tag)
            return
        self._connection.reject(self._tag, requeue=requeue)
