"""Dead-lettering as RabbitMQ 3.10 does it: the ``x-death`` history, the routing of a dead
letter through its queue's dead-letter exchange, and the cycles it drops."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._exchanges import cc_keys, route
from ._message import Message

if TYPE_CHECKING:
    from ._queues import Queue
    from ._vhost import Vhost

__all__ = ["dead_letter"]

log = logging.getLogger(__name__)


def dead_letter(vhost: Vhost, q: Queue, message: Message, reason: str) -> None:
    """Republish ``message`` from ``q`` to its dead-letter exchange, or drop it.

    ``reason`` is RabbitMQ's: ``expired``, ``rejected``, ``maxlen`` or ``delivery_limit``.
    """
    if q.dlx is None:
        return
    x = vhost.exchanges.get(q.dlx)
    if x is None:
        log.debug(
            "memory broker %r: dead-letter exchange %r of queue %r missing, message dropped",
            vhost.name,
            q.dlx,
            q.name,
        )
        return
    headers = dict(message.headers)
    record_death(headers, message, q.name, reason, vhost.clock.wall())
    if q.dlrk is not None:
        keys: tuple[str, ...] = (q.dlrk,)
        headers.pop("CC", None)
    else:
        keys = message.routing_keys
    dead = Message(
        message.body,
        x.name,
        keys,
        headers,
        message.content_type,
        message.message_id,
        message.correlation_id,
        message.reply_to,
        None,  # the per-message TTL is removed; x-death keeps it as original-expiration
        message.delivery_mode,
    )
    queues = route(x, keys, headers, vhost.exchanges, vhost.queues)
    if reason != "rejected":
        deaths = headers["x-death"]
        # RabbitMQ drops a message that would cycle back without any rejection on the way.
        queues = tuple(target for target in queues if not _is_cycle(target.name, deaths))
    first = True
    for target in queues:
        target.enqueue(dead if first else dead.with_headers(dict(headers)))
        first = False


def record_death(
    headers: dict[str, Any], message: Message, queue: str, reason: str, now: datetime
) -> None:
    """Update ``x-death`` (and the ``x-first-death-*`` headers) the way RabbitMQ 3.10 does;
    ``now`` is the broker clock's wall-clock time."""
    entry: dict[str, Any] = {
        "count": 1,
        "exchange": message.exchange,
        "queue": queue,
        "reason": reason,
        # The publish key plus the CC keys still in the headers (BCC was stripped on publish).
        "routing-keys": [message.routing_keys[0], *cc_keys(headers)],
        "time": now.replace(microsecond=0),  # AMQP timestamps are seconds
    }
    if message.expiration is not None:
        entry["original-expiration"] = str(message.expiration)  # a shortstr property on the wire
    if "x-death" not in headers:
        headers["x-first-death-exchange"] = message.exchange
        headers["x-first-death-queue"] = queue
        headers["x-first-death-reason"] = reason
        headers["x-death"] = [entry]
        return
    deaths = headers["x-death"]
    if not isinstance(deaths, list):
        headers["x-death"] = [entry]  # RabbitMQ resets an x-death that is not an array
        return
    # One entry per (queue, reason): a repeat counts up and moves to the front, keeping the
    # time, exchange and routing keys of its first occurrence.
    matched: dict[str, Any] | None = None
    others: list[Any] = []
    seen: set[tuple[Any, Any]] = set()
    for death in deaths:
        if not isinstance(death, Mapping):
            continue
        pair = (death.get("queue"), death.get("reason"))
        if pair in seen:
            continue
        seen.add(pair)
        if pair == (queue, reason):
            matched = dict(death)
        else:
            others.append(death)
    if matched is not None:
        count = matched.get("count")
        matched["count"] = count + 1 if isinstance(count, int) else 1
        entry = matched
    headers["x-death"] = [entry, *others]


def _is_cycle(queue: str, deaths: Iterable[Any]) -> bool:
    """Whether dead-lettering to ``queue`` closes a cycle with no rejection in it."""
    for death in deaths:
        if not isinstance(death, Mapping) or death.get("reason") == "rejected":
            return False  # a client or a rejection took part: not fully automatic
        if death.get("queue") == queue:
            return True
    return False
