"""Publishing guarantees, the same on both brokers."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Publisher,
    PublishError,
    RetryPolicy,
    Route,
    event_stream_publisher,
    with_queue_options,
    with_retry_policy,
)
from tests.helpers import Collector, queue_depth


class Note(BaseModel):
    n: int


async def test_publish_many_confirms_every_event(amqp_events_broker_url: str) -> None:
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Note, "Note"))
    reader = Connection("reader", amqp_events_broker_url)

    @reader.event_stream_consumer("Note")
    async def on_note(note: Note) -> None:
        got.add(note.n)

    async with reader, Connection("writer", amqp_events_broker_url) as writer:
        await reader.start()
        await writer.start(event_stream_publisher(publisher))
        await publisher.publish_many((Note(n=n) for n in range(2500)), max_in_flight=300)
        assert sorted(await got.wait(2500)) == list(range(2500))


async def test_mandatory_reports_unroutable(amqp_events_broker_url: str) -> None:
    publisher = Publisher(Route(Note, "Note"))
    async with Connection("writer", amqp_events_broker_url) as writer:
        await writer.start(event_stream_publisher(publisher))
        await publisher.publish(Note(n=1))  # nobody bound: the broker drops it, as asked
        with pytest.raises(
            PublishError,
            match="exchange 'events.topic.exchange' with routing key 'Note' is unroutable",
        ):
            await publisher.publish(Note(n=1), mandatory=True)
        with pytest.raises(PublishError, match="2 of 2 events not confirmed") as info:
            await publisher.publish_many([Note(n=1), Note(n=2)], mandatory=True)
        assert [event for event, _ in info.value.failures] == [Note(n=1), Note(n=2)]


async def test_max_length_reject_publish_bounds_the_queue(amqp_events_broker_url: str) -> None:
    publisher = Publisher(Route(Note, "Note"))
    reader = Connection("reader", amqp_events_broker_url)

    @reader.event_stream_consumer("Note")
    async def on_note(note: Note) -> None:
        pass

    # Without retries: a retry's way back into a full queue would be dropped silently, so
    # max_length is refused with delayed retries.
    await reader.start(with_queue_options(max_length=3), with_retry_policy(RetryPolicy(attempts=1)))
    await reader.close()  # the queue stays, nobody consumes it
    async with Connection("writer", amqp_events_broker_url) as writer:
        await writer.start(event_stream_publisher(publisher))
        await publisher.publish_many([Note(n=n) for n in range(3)])
        with pytest.raises(PublishError):
            await publisher.publish(Note(n=4))
    assert await queue_depth(amqp_events_broker_url, "events.topic.exchange.queue.reader") == 3
