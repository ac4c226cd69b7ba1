"""Order (issue 17, items 3 and 4): a transaction that took its id first and committed last is
still relayed; events of one transaction go out in the order written; a row that cannot be
published holds back its own partition only, whatever the number of relays; several relays
never publish one row twice nor reorder a partition."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import (
    Connection,
    Publisher,
    Route,
    event_stream_publisher,
)
from amqp_events.outbox import Outbox, outbox_relay
from tests.helpers import Collector, eventually

from .helpers import KEY, OrderCreated, all_sent, order_publisher, started_consumer, write

FAST_RETRY = (0.05, 0.2)


class OrderLost(BaseModel):
    id: str


async def test_a_transaction_that_took_its_id_first_and_committed_last_is_relayed(
    engine: AsyncEngine, database_kind: str, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    publisher = order_publisher()
    got: Collector[str] = Collector()
    shipping = await started_consumer(amqp_events_broker_url, got)
    orders = Connection("orders", amqp_events_broker_url)
    await orders.start(event_stream_publisher(publisher), outbox_relay(outbox))
    try:
        first = AsyncSession(engine)
        await first.begin()
        await outbox.publish(first, publisher, OrderCreated(id="took-id-first"))
        table = outbox.table
        if database_kind == "postgresql":
            # Its id is taken, its row invisible: a later transaction commits past it.
            await write(outbox, publisher, ["committed-first"])
            assert await got.wait(1) == ["committed-first"]
            await got.settle(0.3)
        else:
            # SQLite has one writer at a time (BEGIN IMMEDIATE): the second transaction
            # waits for the first, so ids are in commit order and no gap can arise.
            second = asyncio.create_task(write(outbox, publisher, ["committed-first"]))
            await asyncio.sleep(0.3)
            assert not second.done()
        await first.commit()
        await first.close()
        if database_kind == "sqlite":
            await second
        expected = (
            ["committed-first", "took-id-first"]
            if database_kind == "postgresql"
            else ["took-id-first", "committed-first"]
        )
        assert await got.wait(2) == expected
        async with engine.connect() as conn:
            ids = dict((await conn.execute(select(table.c.message_id, table.c.id))).all())
        assert len(ids) == 2
        await eventually(lambda: all_sent(outbox), what="marked sent")  # commit after delivery
    finally:
        await orders.close()
        await shipping.close()


async def test_events_of_one_transaction_are_published_in_the_order_written(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    publisher = order_publisher()
    got: Collector[str] = Collector()
    shipping = await started_consumer(amqp_events_broker_url, got)
    orders = Connection("orders", amqp_events_broker_url)
    await orders.start(event_stream_publisher(publisher), outbox_relay(outbox, batch_size=37))
    try:
        ids = [f"e-{i:03}" for i in range(300)]
        await write(outbox, publisher, ids)
        assert await got.wait(300) == ids
    finally:
        await orders.close()
        await shipping.close()


@pytest.mark.parametrize("relays", [1, 2])
async def test_an_unpublishable_row_holds_back_its_partition_only(
    engine: AsyncEngine,
    amqp_events_broker_url: str,
    relays: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    publishers = [Publisher(Route(OrderCreated, KEY), Route(OrderLost, "Order.Lost"))]
    publishers += [Publisher(Route(OrderCreated, KEY)) for _ in range(relays - 1)]
    got: Collector[str] = Collector()
    shipping = await started_consumer(amqp_events_broker_url, got)
    connections = [Connection(f"orders-{i}", amqp_events_broker_url) for i in range(relays)]
    for connection, publisher in zip(connections, publishers, strict=True):
        await connection.start(
            event_stream_publisher(publisher), outbox_relay(outbox, retry_backoff=FAST_RETRY)
        )
    audit: Connection | None = None
    lost_seen: Collector[str] = Collector()
    try:
        caplog.set_level(logging.WARNING, logger="amqp_events.outbox")
        async with AsyncSession(engine) as session, session.begin():
            p = publishers[0]
            # Nobody consumes Order.Lost yet: published mandatory, it is unroutable.
            await outbox.publish(session, p, OrderLost(id="a-0"), partition_key="a", mandatory=True)
            await outbox.publish(session, p, OrderCreated(id="a-1"), partition_key="a")
            await outbox.publish(session, p, OrderCreated(id="b-1"), partition_key="b")
        await write(outbox, publishers[-1], ["a-2"], partition_key="a")
        await write(outbox, publishers[-1], ["b-2"], partition_key="b")
        assert await got.wait(2) == ["b-1", "b-2"]
        await got.settle(0.5)  # a few retries of a-0 pass, each with its backoff
        assert got.items == ["b-1", "b-2"]
        [blocked] = await outbox.blocked_partitions()
        assert (blocked.partition_key, blocked.routing_key, blocked.waiting) == (
            "a",
            "Order.Lost",
            3,
        )
        assert blocked.attempts >= 2
        assert blocked.last_error is not None
        assert "Unroutable" in blocked.last_error
        assert any("holds back" in r.getMessage() for r in caplog.records)
        # A queue for Order.Lost appears: a-0 goes out, then the events it held back.
        audit = await started_consumer(amqp_events_broker_url, lost_seen, key="Order.Lost")
        assert await got.wait(4) == ["b-1", "b-2", "a-1", "a-2"]
        assert await lost_seen.wait(1) == ["a-0"]
        # Marked sent by the pass's commit, which may follow the deliveries.
        await eventually(lambda: all_sent(outbox), what="all sent")
        assert await outbox.blocked_partitions() == []
        table = outbox.table
        async with engine.connect() as conn:
            sent = dict(
                (
                    await conn.execute(
                        select(table.c.routing_key, table.c.sent_at)
                        .where(table.c.partition_key == "a")
                        .order_by(table.c.id)
                    )
                ).all()
            )
        assert sent["Order.Lost"] <= sent[KEY]
    finally:
        for connection in connections:
            await connection.close()
        if audit is not None:
            await audit.close()
        await shipping.close()


async def test_two_relays_publish_each_row_once_and_each_partition_in_commit_order(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    publishers = [order_publisher(), order_publisher()]
    got: Collector[str] = Collector()
    shipping = await started_consumer(amqp_events_broker_url, got)
    connections = [Connection("orders", amqp_events_broker_url) for _ in range(2)]
    for connection, publisher in zip(connections, publishers, strict=True):
        await connection.start(
            event_stream_publisher(publisher), outbox_relay(outbox, batch_size=20)
        )
    partitions = [f"p{i}" for i in range(8)]
    rng = random.Random(17)

    async def writer(number: int) -> None:
        for _i in range(15):
            key = rng.choice(partitions)
            # Writers of one partition take turns, so commit order is known: n rises.
            async with locks[key]:
                counters[key] += 1
                await write(
                    outbox,
                    publishers[number % 2],
                    [f"{key}:{counters[key]}"],
                    partition_key=key,
                )
            await asyncio.sleep(0)

    locks = {key: asyncio.Lock() for key in partitions}
    counters = dict.fromkeys(partitions, 0)
    try:
        await asyncio.gather(*(writer(n) for n in range(6)))
        total = sum(counters.values())
        assert total == 90
        items = await got.wait(total, within=30)
        await got.settle(0.3)
        assert len(got.items) == total  # none twice
        for key in partitions:
            seen = [int(i.split(":")[1]) for i in items if i.startswith(f"{key}:")]
            assert seen == list(range(1, counters[key] + 1)), key
    finally:
        for connection in connections:
            await connection.close()
        await shipping.close()
