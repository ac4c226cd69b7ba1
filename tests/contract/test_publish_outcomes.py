"""What a failed publish tells the caller: refused or never sent (safe to resend), or unknown
(the broker may have it: a resend may duplicate it); and close() ends waiting publishes."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    MemoryBroker,
    Publisher,
    PublishError,
    PublishOutcomeUnknown,
    Route,
    event_stream_publisher,
)
from tests.helpers import eventually, queue_depth


class Note(BaseModel):
    n: int


QUEUE = "events.topic.exchange.queue.reader"


async def test_a_confirm_timeout_is_an_unknown_outcome(amqp_events_broker_url: str) -> None:
    """With a publish_timeout far below a confirm's round trip, publishes time out after their
    message may have gone out: each failure must say the outcome is unknown, and the queue
    gets more messages than were confirmed (resending the failures would duplicate those)."""
    count = 300
    reader = Connection("reader", amqp_events_broker_url)

    @reader.event_stream_consumer("Note")
    async def on_note(note: Note) -> None:
        pass

    await reader.start()
    await reader.close()  # the queue stays bound; nobody consumes it
    publisher = Publisher(Route(Note, "Note"))
    async with Connection("writer", amqp_events_broker_url, publish_timeout=0.0005) as writer:
        await writer.start(event_stream_publisher(publisher))
        try:
            await publisher.publish_many([Note(n=n) for n in range(count)])
            failures: list[tuple[object, BaseException]] = []
        except PublishError as exc:
            failures = exc.failures
        wrong = [f"{type(e).__name__}: {e}" for _, e in failures]
        assert all(isinstance(e, PublishOutcomeUnknown) for _, e in failures), wrong[:3]
        successes = count - len(failures)

        async def arrived() -> bool:
            # Every confirmed message, and some of the unknown ones, once the broker took them.
            depth = await queue_depth(amqp_events_broker_url, QUEUE)
            return depth >= successes and (depth > successes or not failures)

        await eventually(arrived, within=10)
    if amqp_events_broker_url.startswith("amqp"):
        # Confirms take longer than 0.5 ms on a real broker.
        assert failures, "no confirm timed out: the test proved nothing"


async def test_close_ends_a_publish_waiting_for_a_reconnection(
    amqp_events_memory_broker: MemoryBroker,
) -> None:
    """The broker is down, a publish waits for it (publish_timeout 30 s): close() makes it fail
    at once, saying the connection was closed, as a plain PublishError since it was never
    handed to a connection."""
    publisher = Publisher(Route(Note, "Note"))
    writer = Connection("writer", amqp_events_memory_broker.url, publish_timeout=30)
    await writer.start(event_stream_publisher(publisher))
    amqp_events_memory_broker.stop()
    try:
        waiting = asyncio.ensure_future(publisher.publish(Note(n=1)))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # waiting for the broker to come back
        loop = asyncio.get_running_loop()
        closed_at = loop.time()
        await writer.close()
        with pytest.raises(PublishError, match="connection is closed") as info:
            await asyncio.wait_for(waiting, 1.0)
        assert loop.time() - closed_at < 1.0
        assert not isinstance(info.value, PublishOutcomeUnknown)
        assert "never sent" in str(info.value)
    finally:
        amqp_events_memory_broker.start()
