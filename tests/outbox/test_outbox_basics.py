"""Committed events are published, rolled-back ones never (issue 17, item 1)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, event_stream_publisher
from amqp_events.outbox import Outbox, outbox_relay
from tests.helpers import Collector

from .helpers import OrderCreated, order_publisher, sent_count, started_consumer, write


async def test_committed_events_are_published_and_rolled_back_ones_never(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    publisher = order_publisher()
    got: Collector[str] = Collector()
    shipping = await started_consumer(amqp_events_broker_url, got)
    orders = Connection("orders", amqp_events_broker_url)
    try:
        await orders.start(event_stream_publisher(publisher), outbox_relay(outbox))

        async def broken_business_rule() -> None:
            async with AsyncSession(engine) as session, session.begin():
                await outbox.publish(session, publisher, OrderCreated(id="rolled-back"))
                raise RuntimeError("business rule broken")

        with pytest.raises(RuntimeError, match="business rule"):
            await broken_business_rule()
        await write(outbox, publisher, ["committed-1", "committed-2"])
        assert await got.wait(2) == ["committed-1", "committed-2"]
        await got.settle()
        assert got.items == ["committed-1", "committed-2"]
        assert await sent_count(outbox) == 2
        assert await outbox.pending() == 0
    finally:
        await orders.close()
        await shipping.close()


async def test_a_relay_woken_as_it_is_cancelled_stops(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    # On Python 3.11, asyncio.wait_for returns normally when it is cancelled in the loop turn
    # its event is set in: a relay sleeping that way outlived its connection's close().
    outbox = Outbox(engine)
    await outbox.create_tables()
    publisher = order_publisher()
    got: Collector[str] = Collector()
    shipping = await started_consumer(amqp_events_broker_url, got)
    orders = Connection("orders", amqp_events_broker_url)
    await orders.start(event_stream_publisher(publisher), outbox_relay(outbox))
    try:
        [relay] = [t for t in asyncio.all_tasks() if "outbox-relay" in t.get_name()]
        await write(outbox, publisher, ["first"])
        assert await got.wait(1) == ["first"]
        await asyncio.sleep(0.05)  # the relay is idle: asleep until woken

        async with AsyncSession(engine) as session:
            async with session.begin():
                await outbox.publish(session, publisher, OrderCreated(id="second"))
            relay.cancel()  # in the loop turn the commit woke the relay in

        done, _ = await asyncio.wait([relay], timeout=5)
        assert relay in done, "the relay went on after it was cancelled"
        assert relay.cancelled()
    finally:
        await orders.close()
        await shipping.close()
