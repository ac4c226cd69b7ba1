"""What an operator may do to a running system, on both brokers: delete the exchange (and with it
every binding, which no consumer hears of), delete queues. The connection restores its own."""

from __future__ import annotations

from pydantic import BaseModel

from amqp_events import Connection, Publisher, Route, event_stream_publisher
from tests.helpers import Collector, delete_exchange, eventually, raw_publish

EXCHANGE = "events.topic.exchange"


class Note(BaseModel):
    n: int


async def test_a_publish_to_a_deleted_exchange_declares_it_again(
    amqp_events_broker_url: str,
) -> None:
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Note, "Note"))

    async with Connection("writer", amqp_events_broker_url, topology_check_interval=None) as writer:

        @writer.event_stream_consumer("Note")
        async def on_note(note: Note) -> None:
            got.add(note.n)

        await writer.start(event_stream_publisher(publisher))
        await publisher.publish(Note(n=1))
        await got.wait(1)
        await delete_exchange(amqp_events_broker_url, EXCHANGE)
        # Refused with 404 once; declared again with this connection's bindings, then sent.
        await publisher.publish(Note(n=2))
        assert await got.wait(2) == [1, 2]


async def test_bindings_lost_with_a_deleted_exchange_come_back(amqp_events_broker_url: str) -> None:
    got: Collector[int] = Collector()

    async with Connection("reader", amqp_events_broker_url, topology_check_interval=0.1) as reader:

        @reader.event_stream_consumer("Note")
        async def on_note(note: Note) -> None:
            got.add(note.n)

        await reader.start()
        await delete_exchange(amqp_events_broker_url, EXCHANGE)

        async def delivered() -> bool:
            try:
                await raw_publish(amqp_events_broker_url, EXCHANGE, "Note", b'{"n":7}', {})
            except Exception:  # the exchange is not back yet
                return False
            await got.settle(0.2)
            return bool(got.items)

        await eventually(delivered, within=10)
    assert got.items[0] == 7
