"""Publishing: a message checked as RabbitMQ checks it (frame and size limits, the exchange,
the expiration), routed, and stored in each queue it reaches, with confirms' outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pamqp import commands as spec

from ..._errors import BrokerError, PublishError, Unroutable
from . import _refusals as refusals
from ._content import received_headers
from ._exchanges import route, sender_selected_keys
from ._info import MessageProperties
from ._message import Message
from ._queues import Queue
from ._vhost import Vhost

__all__ = ["publish"]


def publish(
    vhost: Vhost,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: Mapping[str, Any] | None,
    properties: MessageProperties,
    *,
    mandatory: bool,
    frame_max: int,
    max_message_size: int,
) -> int:
    """Route a message to ``vhost``'s queues; return how many got it (see
    ``MemoryBroker.publish`` for the refusals)."""
    expiration = properties.expiration
    hdrs = received_headers(
        exchange,
        routing_key,
        len(body),
        headers,
        spec.Basic.Properties(
            content_type=properties.content_type,
            delivery_mode=properties.delivery_mode,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            expiration=None if expiration is None else str(expiration),
            message_id=properties.message_id,
        ),
        frame_max=frame_max,
        max_message_size=max_message_size,
    )
    x = vhost.exchanges.get(exchange)
    if x is None:
        raise refusals.no_exchange(exchange)
    if x.internal:
        raise refusals.internal_exchange(exchange)
    if expiration is not None and (type(expiration) is not int or expiration < 0):
        raise BrokerError(
            406, f"PRECONDITION_FAILED - invalid expiration '{expiration}' for message"
        )
    keys = sender_selected_keys(routing_key, hdrs)
    queues = route(x, keys, hdrs, vhost.exchanges, vhost.queues)
    if not queues:
        if mandatory:
            raise Unroutable(
                f"message to exchange {exchange!r} with routing key {routing_key!r} is "
                "unroutable: no queue is bound to match it (published as mandatory)"
            )
        return 0
    refused: Queue | None = None
    first = True
    for q in queues:
        message = Message(
            body,
            exchange,
            keys,
            hdrs if first else dict(hdrs),
            properties.content_type,
            properties.message_id,
            properties.correlation_id,
            properties.reply_to,
            expiration,
            properties.delivery_mode,
            properties.timestamp,
        )
        first = False
        if not q.enqueue(message):
            refused = q
    if refused is not None:
        raise PublishError(
            f"message to exchange {exchange!r} with routing key {routing_key!r} was nacked: "
            f"queue {refused.name!r} is full ({refused.limits_text()})"
        )
    return len(queues)
