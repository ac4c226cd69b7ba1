"""``amqp-events dlq list`` and ``dlq show``: dead letters printed as a table, JSON or in full.

Both only look: every message fetched is put back in its place (see ``_dead_letters``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractConnection

from .. import _naming as naming
from ._dead_letters import DeadLetter, jsonable, reading
from ._errors import EXIT_NOT_FOUND, CliError
from ._tables import table

__all__ = ["list_dead_letters", "show"]


async def list_dead_letters(
    connection: AbstractConnection,
    queue: str,
    *,
    limit: int,
    reason: str | None,
    as_json: bool,
    out: Callable[[str], None],
) -> int:
    letters: list[DeadLetter] = []
    async with reading(connection, queue) as reader:
        now = datetime.now(UTC)
        while len(letters) < limit and (letter := await reader.next()) is not None:
            reader.keep(letter)
            if letter.has_reason(reason):
                letters.append(letter)
    name = reader.name
    if as_json:
        out(
            json.dumps(
                {
                    "queue": name,
                    "message_count": reader.total,
                    "dead_letters": [jsonable(letter.summary(now)) for letter in letters],
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


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


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
    found: DeadLetter | None = None
    async with reading(connection, queue) as reader:
        now = datetime.now(UTC)
        while (letter := await reader.next()) is not None:
            reader.keep(letter)
            if (message_id is None and letter.position == position) or (
                message_id is not None and letter.message.message_id == message_id
            ):
                found = letter
                break
    name = reader.name
    if found is None:
        wanted = f"with message id {message_id!r}" if message_id else f"at position {position}"
        raise CliError(f"{name}: no dead letter {wanted} (it holds {reader.total})", EXIT_NOT_FOUND)
    data = jsonable(found.full(now))
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
