"""``amqp-events dlq``: list, show, replay and purge the dead letters of a queue.

Reading never removes: messages are fetched one by one (``basic.get``) without being
acknowledged, and every message not replayed is put back (``basic.nack`` with requeue) when the
command ends, in its place. Each command fetches at most the number of messages the queue held
when it started, so a replayed message that fails again and comes back is not seen twice.

A replay publishes a copy, persistent, mandatory and confirmed by the broker, and acknowledges
the dead copy only after that confirm. A copy the broker cannot route (nothing bound, the
queue was deleted) or refuses stops the replay: its dead copy stays, and so do the rest.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from .. import _naming as naming
from .._transport._wire import carried_headers
from ._errors import EXIT_FOUND_PROBLEMS, EXIT_NOT_FOUND, CliError
from ._tables import table

__all__ = [
    "DeadLetter",
    "dead_letter_queue_of",
    "list_dead_letters",
    "purge",
    "replay",
    "show",
]

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


def dead_letter_queue_of(queue: str) -> str:
    """``orders`` and ``orders.dlq`` both mean ``orders.dlq``."""
    return queue if queue.endswith(".dlq") else naming.dead_letter_queue(queue)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of a dead-letter queue, as fetched (not yet settled)."""

    position: int
    message: AbstractIncomingMessage

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.message.headers or {}

    def header_text(self, name: str) -> str | None:
        value = self.headers.get(name)
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8", "replace")
        return None if value is None else str(value)

    @property
    def reason(self) -> str:
        return self.header_text(naming.DEAD_REASON_HEADER) or "?"

    @property
    def routing_key(self) -> str:
        return self.header_text(naming.ROUTING_KEY_HEADER) or self.message.routing_key or ""

    @property
    def exchange(self) -> str | None:
        return self.header_text(naming.EXCHANGE_HEADER)

    @property
    def dead_queue(self) -> str | None:
        return self.header_text(naming.DEAD_QUEUE_HEADER)

    @property
    def attempt(self) -> int | None:
        value = self.headers.get(naming.ATTEMPT_HEADER)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def dead_at(self) -> datetime | None:
        text = self.header_text(naming.DEAD_AT_HEADER)
        if text:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                moment = None
            if moment is not None:
                return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        timestamp = self.message.timestamp
        if isinstance(timestamp, datetime):
            return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
        return None

    def age_seconds(self, now: datetime) -> float | None:
        moment = self.dead_at()
        return None if moment is None else max(0.0, (now - moment).total_seconds())

    def summary(self, now: datetime) -> dict[str, Any]:
        dead_at = self.dead_at()
        return {
            "position": self.position,
            "message_id": self.message.message_id,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "reason": self.reason,
            "exception_type": self.header_text(naming.EXCEPTION_TYPE_HEADER),
            "exception_message": self.header_text(naming.EXCEPTION_MESSAGE_HEADER),
            "attempt": self.attempt,
            "redeliveries": self.headers.get(naming.REDELIVERIES_HEADER),
            "dead_queue": self.dead_queue,
            "dead_service": self.header_text(naming.DEAD_SERVICE_HEADER),
            "dead_at": dead_at.isoformat() if dead_at else None,
            "age_seconds": self.age_seconds(now),
        }

    def full(self, now: datetime) -> dict[str, Any]:
        message = self.message
        return {
            **self.summary(now),
            "properties": {
                "content_type": message.content_type,
                "content_encoding": message.content_encoding,
                "correlation_id": message.correlation_id,
                "reply_to": message.reply_to,
                "type": message.type,
                "app_id": message.app_id,
                "priority": message.priority,
                "delivery_mode": int(message.delivery_mode or 0) or None,
                "timestamp": message.timestamp.isoformat() if message.timestamp else None,
            },
            "headers": _jsonable(dict(self.headers)),
            "body": _body(message.body),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


class _Reader:
    """Fetches a dead-letter queue's messages unsettled; puts back what was not taken."""

    def __init__(self, channel: AbstractChannel, queue: aio_pika.abc.AbstractQueue, total: int):
        self.channel = channel
        self.queue = queue
        self.total = total
        self.fetched = 0
        self.held: list[AbstractIncomingMessage] = []

    async def next(self) -> DeadLetter | None:
        if self.fetched >= self.total:
            return None
        message = await self.queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        self.fetched += 1
        return DeadLetter(self.fetched, message)

    def keep(self, letter: DeadLetter) -> None:
        self.held.append(letter.message)

    async def put_back(self) -> None:
        if self.channel.is_closed:
            return  # the broker requeued everything unsettled when the channel closed
        for message in self.held:
            await message.nack(requeue=True)
        self.held.clear()


async def _open(connection: AbstractConnection, queue: str) -> tuple[str, _Reader]:
    name = dead_letter_queue_of(queue)
    channel = await connection.channel(publisher_confirms=False)
    try:
        declared = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        of = "" if name == queue else f" (the dead-letter queue of {queue!r})"
        raise CliError(f"no queue {name!r}{of} on this broker and vhost", EXIT_NOT_FOUND) from None
    total = declared.declaration_result.message_count or 0
    return name, _Reader(channel, declared, total)


def _matches(letter: DeadLetter, reason: str | None) -> bool:
    return reason is None or letter.reason == reason


async def list_dead_letters(
    connection: AbstractConnection,
    queue: str,
    *,
    limit: int,
    reason: str | None,
    as_json: bool,
    out: Callable[[str], None],
) -> int:
    name, reader = await _open(connection, queue)
    now = datetime.now(UTC)
    letters: list[DeadLetter] = []
    try:
        while len(letters) < limit and (letter := await reader.next()) is not None:
            reader.keep(letter)
            if _matches(letter, reason):
                letters.append(letter)
    finally:
        await reader.put_back()
    if as_json:
        out(
            json.dumps(
                {
                    "queue": name,
                    "message_count": reader.total,
                    "dead_letters": [_jsonable(letter.summary(now)) for letter in letters],
                },
                indent=2,
            )
        )
        return 0
    shown = f"{len(letters)} shown" + (f", reason {reason}" if reason else "")
    out(f"{name}: {reader.total} message(s), {shown}")
    if letters:
        out(
            table(
                ["#", "AGE", "REASON", "ATTEMPT", "EXCEPTION", "ROUTING KEY", "MESSAGE ID"],
                [
                    [
                        str(letter.position),
                        _age(letter.age_seconds(now)),
                        letter.reason,
                        "?" if letter.attempt is None else str(letter.attempt),
                        _exception(letter),
                        letter.routing_key,
                        letter.message.message_id or "-",
                    ]
                    for letter in letters
                ],
            )
        )
    return 0


def _exception(letter: DeadLetter) -> str:
    kind = letter.header_text(naming.EXCEPTION_TYPE_HEADER)
    text = letter.header_text(naming.EXCEPTION_MESSAGE_HEADER) or ""
    text = " ".join(text.split())
    if len(text) > 60:
        text = text[:57] + "..."
    if kind:
        return f"{kind}: {text}" if text else kind
    return text or "-"


async def show(
    connection: AbstractConnection,
    queue: str,
    *,
    position: int,
    message_id: str | None,
    as_json: bool,
    out: Callable[[str], None],
) -> int:
    """Print one dead letter in full: the one with ``message_id``, else the one at
    ``position`` (1 = the oldest)."""
    name, reader = await _open(connection, queue)
    now = datetime.now(UTC)
    found: DeadLetter | None = None
    try:
        while (letter := await reader.next()) is not None:
            reader.keep(letter)
            if (message_id is None and letter.position == position) or (
                message_id is not None and letter.message.message_id == message_id
            ):
                found = letter
                break
    finally:
        await reader.put_back()
    if found is None:
        wanted = f"with message id {message_id!r}" if message_id else f"at position {position}"
        raise CliError(f"{name}: no dead letter {wanted} (it holds {reader.total})", EXIT_NOT_FOUND)
    data = _jsonable(found.full(now))
    if as_json:
        out(json.dumps(data, indent=2))
        return 0
    out(f"{name} #{found.position}")
    for key, value in data.items():
        if key not in ("properties", "headers", "body"):
            out(f"  {key}: {value}")
    out("  properties:")
    for key, value in data["properties"].items():
        if value is not None:
            out(f"    {key}: {value}")
    out("  headers:")
    for key, value in data["headers"].items():
        out(f"    {key}: {json.dumps(value, ensure_ascii=False)}")
    out("  body:")
    body = data["body"]
    text = body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False)
    out("\n".join(f"    {line}" for line in text.splitlines()))
    return 0


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
    name, reader = await _open(connection, queue)
    publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    report = ReplayReport()
    wanted = reader.total if limit is None else min(limit, reader.total)
    verb = "would replay" if dry_run else "replayed"
    try:
        while report.replayed < wanted and (letter := await reader.next()) is not None:
            if not _matches(letter, reason):
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
        await reader.put_back()
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


async def purge(
    connection: AbstractConnection,
    queue: str,
    *,
    yes: bool,
    confirm: Callable[[str], bool],
    out: Callable[[str], None],
) -> int:
    name, reader = await _open(connection, queue)
    if reader.total == 0:
        out(f"{name}: empty, nothing to purge")
        return 0
    if not yes and not confirm(f"Purge {reader.total} message(s) from {name}? [y/N] "):
        out(f"{name}: not purged")
        return EXIT_FOUND_PROBLEMS
    result = await reader.queue.purge()
    out(f"{name}: purged {result.message_count} message(s)")
    return 0


def ask(prompt: str) -> bool:
    """A yes from the terminal; without one (no terminal), no."""
    if not sys.stdin.isatty():
        raise CliError("refusing to purge without --yes: standard input is not a terminal")
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
