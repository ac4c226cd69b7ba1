"""``amqp-events dlq replay``: dead letters sent back to be handled again.

A replay publishes a copy, persistent, mandatory and confirmed by the broker, and acknowledges
the dead copy only after that confirm. A copy the broker cannot route (nothing bound, the
queue was deleted) or refuses stops the replay: its dead copy stays, and so do the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from .. import _naming as naming
from .._transport._wire import carried_headers
from ._dead_letters import DeadLetter, reading
from ._errors import EXIT_FOUND_PROBLEMS, CliError

__all__ = ["PROGRESS_EVERY", "ReplayReport", "ReplayTarget", "replay"]

ReplayTarget = Literal["queue", "exchange"]

# Our failure bookkeeping: a replay starts the message afresh without them.
_FAILURE_HEADERS = frozenset(
    {
        naming.ATTEMPT_HEADER,
        naming.REDELIVERIES_HEADER,
        naming.DROPPED_HEADERS_HEADER,
        naming.DEAD_REASON_HEADER,
        naming.DEAD_QUEUE_HEADER,
        naming.DEAD_SERVICE_HEADER,
        naming.DEAD_AT_HEADER,
        naming.EXCEPTION_TYPE_HEADER,
        naming.EXCEPTION_MESSAGE_HEADER,
    }
)
PROGRESS_EVERY = 100


@dataclass(frozen=True, slots=True)
class _Destination:
    exchange: str
    routing_key: str
    headers: dict[str, Any]

    def describe(self) -> str:
        return f"exchange {self.exchange or '(default)'!r} key {self.routing_key!r}"


def _destination(letter: DeadLetter, target: ReplayTarget, dlq: str) -> _Destination | str:
    """Where ``letter`` goes back to, or why it cannot."""
    key = letter.header_text(naming.ROUTING_KEY_HEADER)
    exchange = letter.exchange
    if key is None or exchange is None:
        return (
            f"has no {naming.ROUTING_KEY_HEADER} or {naming.EXCHANGE_HEADER} header: not a dead "
            "letter of amqp-events, left in place"
        )
    user_headers = {
        name: value
        for name, value in carried_headers(letter.headers).items()
        if name not in _FAILURE_HEADERS
    }
    if target == "queue" or exchange == "":
        # Back into the queue that gave up, by its name: only that service sees it again. The
        # service trusts our routing-key and exchange headers on a message that comes back
        # through its queue's name (as from a retry's delay queue), so it dispatches by the
        # event's key and a later dead-lettering still records where the event came from.
        queue = letter.dead_queue or dlq.removesuffix(".dlq")
        return _Destination("", queue, user_headers)
    for name in (naming.ROUTING_KEY_HEADER, naming.EXCHANGE_HEADER):
        user_headers.pop(name, None)
    return _Destination(exchange, key, user_headers)


def _copy(letter: DeadLetter, headers: dict[str, Any]) -> aio_pika.Message:
    message = letter.message
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    skipped: int = 0  # not ours, left in place
    stopped: str | None = None


async def replay(
    connection: AbstractConnection,
    queue: str,
    *,
    limit: int | None,
    reason: str | None,
    dry_run: bool,
    target: ReplayTarget,
    out: Callable[[str], None],
    progress: Callable[[str], None],
) -> int:
    report = ReplayReport()
    verb = "would replay" if dry_run else "replayed"
    async with reading(connection, queue) as reader:
        name = reader.name
        publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        wanted = reader.total if limit is None else min(limit, reader.total)
        try:
            while report.replayed < wanted and (letter := await reader.next()) is not None:
                if not letter.has_reason(reason):
                    reader.keep(letter)
                    continue
                destination = _destination(letter, target, name)
                if isinstance(destination, str):
                    reader.keep(letter)
                    report.skipped += 1
                    out(f"#{letter.position} {destination}")
                    continue
                if dry_run:
                    reader.keep(letter)
                    report.replayed += 1
                    out(f"#{letter.position} {letter.routing_key} -> {destination.describe()}")
                    continue
                failure = await _publish(publish_channel, letter, destination)
                if failure is not None:
                    reader.keep(letter)
                    report.stopped = f"#{letter.position} to {destination.describe()}: {failure}"
                    break
                await letter.message.ack()
                report.replayed += 1
                if report.replayed % PROGRESS_EVERY == 0:
                    progress(f"{name}: {verb} {report.replayed}/{wanted}")
        finally:
            if not publish_channel.is_closed:
                await publish_channel.close()
    out(f"{name}: {verb} {report.replayed} message(s)")
    if report.skipped:
        out(f"{name}: {report.skipped} message(s) left in place (not amqp-events dead letters)")
    if report.stopped is not None:
        raise CliError(
            f"{name}: replay stopped at {report.stopped}; that message and the rest stay in "
            f"the dead-letter queue",
            EXIT_FOUND_PROBLEMS,
        )
    return EXIT_FOUND_PROBLEMS if report.skipped else 0


async def _publish(
    channel: AbstractChannel, letter: DeadLetter, destination: _Destination
) -> str | None:
    """Publish the copy, confirmed; None, or why the broker did not take it."""
    try:
        if destination.exchange == "":
            exchange = channel.default_exchange
        else:
            exchange = await channel.get_exchange(destination.exchange, ensure=False)
        await exchange.publish(
            _copy(letter, destination.headers), destination.routing_key, mandatory=True
        )
    except aiormq.exceptions.PublishError:
        return "unroutable (the broker returned it: no queue is bound for it)"
    except aiormq.exceptions.DeliveryError:
        return "refused by the broker (basic.nack)"
    except aiormq.exceptions.ChannelClosed as exc:
        return f"refused by the broker: {exc.args[0] if exc.args else exc}"
    return None
