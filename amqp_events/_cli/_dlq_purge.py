"""``amqp-events dlq purge``: every dead letter of a queue deleted, after a confirmation."""

from __future__ import annotations

import sys
from collections.abc import Callable

from aio_pika.abc import AbstractConnection

from ._dead_letters import open_reader
from ._errors import EXIT_FOUND_PROBLEMS, CliError

__all__ = ["ask", "purge"]


async def purge(
    connection: AbstractConnection,
    queue: str,
    *,
    yes: bool,
    confirm: Callable[[str], bool],
    out: Callable[[str], None],
) -> int:
    reader = await open_reader(connection, queue)
    name = reader.name
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
