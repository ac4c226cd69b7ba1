"""What an operator may do to a running system, on both brokers: delete the exchange (and with it
every binding, which no consumer hears of), delete queues. The connection restores its own, or,
when it cannot, fails loudly."""

from __future__ import annotations

from pydantic import BaseModel

from amqp_events import (
    Connection,
    ConsumerLost,
    Publisher,
    Route,
    close_listener,
    event_stream_publisher,
)
from amqp_events._transport._recovery import RESTORE_ATTEMPTS
from tests.helpers import (
    Collector,
    delete_exchange,
    delete_queue,
    eventually,
    raw_publish,
    replace_queue,
)

EXCHANGE = "events.topic.exchange"
QUEUE = "events.topic.exchange.queue.reader"


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


async def test_a_deleted_queue_is_declared_again_and_consumed(amqp_events_broker_url: str) -> None:
    got: Collector[int] = Collector()
    heard: list[BaseException | None] = []

    async with Connection("reader", amqp_events_broker_url, topology_check_interval=None) as reader:

        @reader.event_stream_consumer("Note")
        async def on_note(note: Note) -> None:
            got.add(note.n)

        await reader.start(close_listener(heard.append))
        await delete_queue(amqp_events_broker_url, QUEUE)  # the broker cancels the consumer

        async def delivered() -> bool:
            await raw_publish(amqp_events_broker_url, EXCHANGE, "Note", b'{"n":8}', {})
            await got.settle(0.1)
            return bool(got.items)

        await eventually(delivered, within=10, what="the queue declared, bound and consumed")
        assert heard == []  # no reconnection: the same connection consumes again


async def test_a_queue_declared_in_its_place_with_other_arguments_fails_the_connection(
    amqp_events_broker_url: str,
) -> None:
    """Our declaration of it is refused (406) every time: after a few tries the connection
    fails with ConsumerLost, naming the queue, instead of retrying for ever or going on
    without the consumer."""
    heard: list[BaseException | None] = []

    async with Connection("reader", amqp_events_broker_url, topology_check_interval=None) as reader:

        @reader.event_stream_consumer("Note")
        async def on_note(note: Note) -> None:
            pass

        await reader.start(close_listener(heard.append))
        await replace_queue(amqp_events_broker_url, QUEUE)  # no x-expires, unlike ours

        async def told() -> bool:
            return bool(heard)

        await eventually(told, within=15, what="ConsumerLost")
        [lost] = heard
        assert isinstance(lost, ConsumerLost)
        assert lost.queue == QUEUE
        assert lost.reply_code == 406
        assert "inequivalent arg" in str(lost)
        assert f"in {RESTORE_ATTEMPTS} attempts" in str(lost)
