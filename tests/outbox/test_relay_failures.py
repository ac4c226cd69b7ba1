"""Broker down, nack (issue 17, item 5): the row stays and is retried with backoff; nothing is
marked sent without a confirm. (Unroutable: tests/outbox/test_ordering.py.)"""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from amqp_events import (
    Connection,
    MemoryBroker,
    RetryPolicy,
    event_stream_consumer,
    event_stream_publisher,
    with_queue_options,
)
from amqp_events.outbox import Outbox, outbox_relay
from tests.helpers import Collector, eventually

from .helpers import KEY, OrderCreated, all_sent, order_publisher, sent_count, write

FAST_RETRY = (0.05, 0.2)


async def test_while_the_broker_is_down_nothing_is_marked_sent_and_all_goes_out_after(
    engine: AsyncEngine,
) -> None:
    broker = MemoryBroker()  # stopping RabbitMQ is for the disruptive suite; this one is ours
    outbox = Outbox(engine)
    await outbox.create_tables()
    got: Collector[str] = Collector()

    async def on_created(event: OrderCreated) -> None:
        got.add(event.id)

    shipping = Connection("shipping", broker.url)
    orders = Connection("orders", broker.url, publish_timeout=0.3)
    publisher = order_publisher()
    await shipping.start(event_stream_consumer(KEY, on_created))
    await orders.start(
        event_stream_publisher(publisher), outbox_relay(outbox, retry_backoff=FAST_RETRY)
    )
    try:
        broker.stop()
        await write(outbox, publisher, ["during-1", "during-2"])
        await asyncio.sleep(1.0)  # several publishes time out meanwhile
        assert await sent_count(outbox) == 0
        [blocked] = await outbox.blocked_partitions()
        assert blocked.attempts >= 1
        assert blocked.waiting == 2
        broker.start()
        assert await got.wait(2, within=15) == ["during-1", "during-2"]
        await eventually(lambda: all_sent(outbox), what="marked sent")
    finally:
        await orders.close()
        await shipping.close()
        broker.reset()


async def test_a_nacked_row_stays_and_is_retried_until_the_broker_takes_it(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    got: Collector[str] = Collector()

    async def on_created(event: OrderCreated) -> None:
        got.add(event.id)

    def shipping() -> Connection:
        return Connection("shipping", amqp_events_broker_url)

    consumer = event_stream_consumer(KEY, on_created, retry=RetryPolicy(attempts=1))
    bounded = with_queue_options(max_length=2, overflow="reject-publish")
    declare_only = shipping()
    await declare_only.start(consumer, bounded)
    await declare_only.close()  # the queue stays, full at 2 messages, nobody consuming
    orders = Connection("orders", amqp_events_broker_url)
    publisher = order_publisher()
    await orders.start(
        event_stream_publisher(publisher), outbox_relay(outbox, retry_backoff=FAST_RETRY)
    )
    ids = [f"e-{i}" for i in range(5)]
    later: Connection | None = None
    try:
        await write(outbox, publisher, ids)

        async def two_sent_rest_refused() -> bool:
            blocked = await outbox.blocked_partitions()
            return await sent_count(outbox) == 2 and len(blocked) == 1

        await eventually(two_sent_rest_refused, what="the third row nacked")
        table = outbox.table
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(table.c.sent_at.is_not(None), table.c.attempts).order_by(table.c.id)
                )
            ).all()
        assert [bool(r[0]) for r in rows] == [True, True, False, False, False]
        assert rows[2][1] >= 1  # refused, to be tried again; what follows waits behind it
        later = shipping()
        await later.start(consumer, bounded)  # the queue drains: the broker takes the rest
        assert sorted(await got.wait(5, within=20)) == ids
        await eventually(lambda: all_sent(outbox), what="marked sent")
    finally:
        await orders.close()
        if later is not None:
            await later.close()
