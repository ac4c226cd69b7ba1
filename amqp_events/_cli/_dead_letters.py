"""Dead letters as the ``dlq`` commands read them: fetched unsettled, put back in their place.

Reading never removes: messages are fetched one by one (``basic.get``) without being
acknowledged, and every message not replayed is put back (``basic.nack`` with requeue) when the
command ends, in its place. Each command fetches at most the number of messages the queue held
when it started, so a replayed message that fails again and comes back is not seen twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from .. import _naming as naming
from ._errors import EXIT_NOT_FOUND, CliError

__all__ = [
    "DeadLetter",
    "Reader",
    "dead_letter_queue_of",
    "jsonable",
    "open_reader",
    "reading",
]


def dead_letter_queue_of(queue: str) -> str:
    """``orders`` and ``orders.dlq`` both mean ``orders.dlq``."""
    return queue if queue.endswith(".dlq") else naming.dead_letter_queue(queue)


def _aware(moment: datetime) -> datetime:
    """``moment``, taken as UTC when it names no time zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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

    def has_reason(self, reason: str | None) -> bool:
        """Whether this is a dead letter of ``reason``; any reason is when it is None."""
        return reason is None or self.reason == reason

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
                return _aware(moment)
        timestamp = self.message.timestamp
        if isinstance(timestamp, datetime):
            return _aware(timestamp)
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
            "headers": jsonable(dict(self.headers)),
            "body": _body(message.body),
        }


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold (bytes, datetimes, other objects) made text."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
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


class Reader:
    """Fetches a dead-letter queue's messages unsettled; puts back what was not taken."""

    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, *, name: str, total: int
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.name = name  # the dead-letter queue's
        self.total = total  # messages it held when the command started
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


async def open_reader(connection: AbstractConnection, queue: str) -> Reader:
    """A reader of the dead-letter queue of ``queue``; a CliError when there is none."""
    name = dead_letter_queue_of(queue)
    channel = await connection.channel(publisher_confirms=False)
    try:
        declared = await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        of = "" if name == queue else f" (the dead-letter queue of {queue!r})"
        raise CliError(f"no queue {name!r}{of} on this broker and vhost", EXIT_NOT_FOUND) from None
    total = declared.declaration_result.message_count or 0
    return Reader(channel, declared, name=name, total=total)


@asynccontextmanager
async def reading(connection: AbstractConnection, queue: str) -> AsyncIterator[Reader]:
    """A reader of the dead-letter queue of ``queue`` that puts back what it kept on exit."""
    reader = await open_reader(connection, queue)
    try:
        yield reader
    finally:
        await reader.put_back()
