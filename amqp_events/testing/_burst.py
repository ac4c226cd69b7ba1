"""Drive services in tests without sleeps, in the spirit of arq's burst mode.

Publish, then run until every queue the connections consume (and their delay queues) is empty
and every handler has returned; then look at what was handled, dead-lettered and published.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from .._codec import Decoder
from .._connection import Connection
from .._errors import DecodeError
from .._publisher import Publisher

__all__ = [
    "ConnectionFactory",
    "DeadLettered",
    "Handled",
    "Outcome",
    "Published",
    "capture",
    "run_until_idle",
]


class ConnectionFactory(Protocol):
    """What the ``amqp_events_connection_factory`` fixture hands a test:
    ``make("orders", **options)`` makes a ``Connection`` named ``orders`` to the test's broker,
    closed after the test."""

    def __call__(self, service_name: str, **options: Any) -> Connection: ...


@dataclass(frozen=True, slots=True)
class Handled:
    """An event a handler returned from (acknowledged)."""

    service: str
    queue: str
    routing_key: str
    event: Any


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A message moved to a dead-letter queue, and why.

    ``reason`` is its ``amqp-events-dead-reason`` (``handler-failed``, ``undecodable``, ...);
    ``exception_type`` the type of the exception that sent it there (None when no exception
    did, e.g. ``no-handler``) and ``cause`` its message or the reason in words. ``event`` is
    the body decoded as the handler for its key would (a model, or a dict); a body that does
    not decode that way is the decoded JSON, else the bytes. ``body`` is always the raw bytes.
    """

    service: str
    queue: str
    routing_key: str
    reason: str
    exception_type: type[BaseException] | None
    cause: str
    event: Any
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Published:
    """An event a publisher of the observed connections published (confirmed)."""

    service: str
    exchange: str
    routing_key: str
    event: Any


@dataclass(slots=True)
class Outcome:
    """What the observed connections did, in the order they did it."""

    handled: list[Handled] = field(default_factory=list)
    dead_lettered: list[DeadLettered] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)

    def events(self, service: str | None = None) -> list[Any]:
        """The handled events (of one service, if named)."""
        return [h.event for h in self.handled if service is None or h.service == service]


class _Recorder:
    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def received(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        pass  # an outcome lists what was handled, not what was tried

    def handled(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        self.outcome.handled.append(Handled(service, queue, routing_key, event))

    def dead_lettered(
        self,
        service: str,
        queue: str,
        routing_key: str,
        reason: str,
        cause: str,
        body: bytes,
        *,
        exception_type: type[BaseException] | None,
        decode: Decoder | None,
    ) -> None:
        event = _decoded(body, decode)
        self.outcome.dead_lettered.append(
            DeadLettered(service, queue, routing_key, reason, exception_type, cause, event, body)
        )

    def published(self, service: str, exchange: str, routing_key: str, event: Any) -> None:
        self.outcome.published.append(Published(service, exchange, routing_key, event))


def _decoded(body: bytes, decode: Decoder | None) -> Any:
    """The body as its handler would see it, else its JSON, else the bytes."""
    if decode is not None:
        try:
            return decode(body)
        except DecodeError:
            pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body


async def wait_until_idle(connections: Sequence[Connection], timeout: float) -> None:
    """Return once every connection is idle twice in a row (a delivery on its way between the
    broker and a handler is not visible to one look)."""
    idle_in_a_row = 0
    try:
        async with asyncio.timeout(timeout):
            while idle_in_a_row < 2:
                states = [await c._is_idle() for c in connections]
                idle_in_a_row = idle_in_a_row + 1 if all(states) else 0
                await asyncio.sleep(0.02)
    except TimeoutError:
        busy = [c.service_name for c in connections if not await c._is_idle()]
        raise TimeoutError(
            f"still busy after {timeout}s: {', '.join(busy) or 'nothing (flapping)'}; a handler "
            "that never returns, or a retry delay longer than the timeout?"
        ) from None


@asynccontextmanager
async def capture(*connections: Connection, timeout: float = 10.0) -> AsyncIterator[Outcome]:
    """Record what ``connections`` do inside the block, and at its end wait until they are idle.

    ::

        async with capture(shipping, orders) as outcome:
            await publisher.publish(OrderCreated(id="1", amount=5))
        assert outcome.events("shipping") == [OrderCreated(id="1", amount=5)]
    """
    outcome = Outcome()
    recorder = _Recorder(outcome)
    for connection in connections:
        connection._attach_observer(recorder)
    try:
        yield outcome
        await wait_until_idle(connections, timeout)
    finally:
        for connection in connections:
            connection._detach_observer(recorder)


async def run_until_idle(
    *connections: Connection,
    publish: Iterable[tuple[Publisher, BaseModel]] = (),
    timeout: float = 10.0,
) -> Outcome:
    """Publish ``(publisher, event)`` pairs, run until ``connections`` are idle, and return what
    they handled, dead-lettered and published."""
    async with capture(*connections, timeout=timeout) as outcome:
        for publisher, event in publish:
            await publisher.publish(event)
    return outcome
