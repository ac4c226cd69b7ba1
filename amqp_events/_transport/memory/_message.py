"""A message as a queue holds it: each queue a message is routed to holds its own copy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._info import MessageProperties, MessageSnapshot

__all__ = ["Message"]


class Message:
    """One message in one queue, with what the queue knows of it (redelivered, expiry,
    position, and how often a quorum queue got it back)."""

    __slots__ = (
        "body",
        "content_type",
        "correlation_id",
        "delivery_count",
        "delivery_mode",
        "exchange",
        "expiration",
        "expires_at",
        "headers",
        "message_id",
        "redelivered",
        "reply_to",
        "routing_keys",
        "seq",
        "timestamp",
    )

    def __init__(
        self,
        body: bytes,
        exchange: str,
        routing_keys: tuple[str, ...],
        headers: dict[str, Any],
        content_type: str | None,
        message_id: str | None,
        correlation_id: str | None,
        reply_to: str | None,
        expiration: int | None,
        delivery_mode: int,
        timestamp: datetime | None = None,
    ) -> None:
        self.body = body
        self.exchange = exchange
        # The publish key first, then CC/BCC keys: RabbitMQ re-routes dead letters with them all.
        self.routing_keys = routing_keys
        self.headers = headers
        self.content_type = content_type
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.delivery_mode = delivery_mode
        self.timestamp = timestamp
        self.redelivered = False
        # Times a quorum queue got it back (requeued, or its consumer went away): delivered
        # as the x-delivery-count header. Classic queues do not count.
        self.delivery_count = 0
        self.expires_at: float | None = None  # deadline in its queue, on the broker's clock
        self.seq = 0  # position in its queue, so a requeue goes back where it was

    def with_headers(self, headers: dict[str, Any]) -> Message:
        """A fresh copy for another queue, with its own ``headers``."""
        return Message(
            self.body,
            self.exchange,
            self.routing_keys,
            headers,
            self.content_type,
            self.message_id,
            self.correlation_id,
            self.reply_to,
            self.expiration,
            self.delivery_mode,
            self.timestamp,
        )

    def delivered_headers(self, *, count: bool = False) -> dict[str, Any]:
        """A copy of the headers as a client receives them: with ``x-delivery-count`` once a
        quorum queue counted a return, or always (``count``: basic.get from a quorum queue)."""
        headers = dict(self.headers)
        if self.delivery_count or count:
            headers["x-delivery-count"] = self.delivery_count
        return headers

    def snapshot(self, *, count: bool = False) -> MessageSnapshot:
        return MessageSnapshot(
            body=self.body,
            exchange=self.exchange,
            routing_key=self.routing_keys[0],
            headers=self.delivered_headers(count=count),
            properties=MessageProperties(
                content_type=self.content_type,
                message_id=self.message_id,
                correlation_id=self.correlation_id,
                reply_to=self.reply_to,
                expiration=self.expiration,
                delivery_mode=self.delivery_mode,
                timestamp=self.timestamp,
            ),
            redelivered=self.redelivered,
        )
