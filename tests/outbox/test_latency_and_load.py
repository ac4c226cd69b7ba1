"""Latency (item 6), cleanup and bounded tables (item 8), SQLite under concurrent writers
(item 9), and the relay's throughput next to publish_many (item 10)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, Headers, event_stream_consumer, event_stream_publisher
from amqp_events.outbox import Inbox, Outbox, inbox_cleanup, outbox_relay
from tests.helpers import Collector, eventually

from .conftest import engine_for
from .helpers import KEY, OrderCreated, all_sent, create_effects, effects, order_publisher, write

# Latencies and rates: measured with no other test loading the broker or the database.
pytestmark = [pytest.mark.alone]


async def count_rows(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


async def test_an_idle_relay_publishes_a_commit_of_another_process_within_100ms_p99(
    engine: AsyncEngine, database_url: str, database_kind: str, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    arrived: dict[str, float] = {}
    got: Collector[str] = Collector()

    async def on_created(event: OrderCreated) -> None:
        arrived[event.id] = time.monotonic()
        got.add(event.id)

    shipping = Connection("shipping", amqp_events_broker_url)
    orders = Connection("orders", amqp_events_broker_url)
    writer = Connection("writer", amqp_events_broker_url)
    # Written through another engine and Outbox: no wake-up within the process, as from
    # another service instance. PostgreSQL wakes the relay by NOTIFY; SQLite's relay polls.
    other_engine = engine_for(database_url)
    other = Outbox(other_engine)
    publisher = order_publisher()
    await shipping.start(event_stream_consumer(KEY, on_created))
    await orders.start(event_stream_publisher(order_publisher()), outbox_relay(outbox))
    await writer.start(event_stream_publisher(publisher))
    latencies: list[float] = []
    try:
        await asyncio.sleep(0.2)  # the relay is idle, listening
        for i in range(40):
            committed = time.monotonic()
            await write(other, publisher, [f"e-{i}"])
            await got.wait(i + 1)
            latencies.append(arrived[f"e-{i}"] - committed)
            await asyncio.sleep(0.01)
    finally:
        await writer.close()
        await orders.close()
        await shipping.close()
        await other_engine.dispose()
    in_order = [f"{x * 1000:.0f}" for x in latencies]
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.1, f"latencies in ms, in the order written: {in_order}"


async def test_sent_rows_and_old_inbox_records_are_deleted_in_batches_unsent_rows_never(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox, inbox = Outbox(engine), Inbox(engine)
    await outbox.create_tables()
    await inbox.create_tables()
    orders = Connection("orders", amqp_events_broker_url)
    publisher = order_publisher()
    await orders.start(event_stream_publisher(publisher))
    try:
        await write(outbox, publisher, [f"e-{i}" for i in range(25)])
        assert await outbox.cleanup(retention=timedelta(0), batch_size=10) == 0  # unsent
        table = outbox.table
        async with engine.begin() as conn:
            await conn.execute(
                update(table).where(table.c.id <= 20).values(sent_at=datetime.now(UTC))
            )
        assert await outbox.cleanup(retention=timedelta(hours=1), batch_size=7) == 0
        assert await outbox.cleanup(retention=timedelta(0), batch_size=7) == 20
        assert await outbox.pending() == 5
        assert await count_rows(engine, table) == 5
    finally:
        await orders.close()
    old, new = datetime.now(UTC) - timedelta(days=8), datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            inbox.table.insert(),
            [
                {"consumer": "c", "message_id": f"m-{i}", "handled_at": old if i < 15 else new}
                for i in range(20)
            ],
        )
    assert await inbox.cleanup(retention=timedelta(days=7), batch_size=4) == 15
    assert await count_rows(engine, inbox.table) == 5
    assert await inbox.handled("m-19", consumer="c")
    assert not await inbox.handled("m-0", consumer="c")


async def test_both_tables_stay_bounded_under_steady_load(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox, inbox = Outbox(engine), Inbox(engine)
    await outbox.create_tables()
    await inbox.create_tables()
    await create_effects(engine)
    got: Collector[str] = Collector()

    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession) -> None:
        await session.execute(effects.insert().values(order_id=event.id))
        got.add(event.id)

    shipping = Connection("shipping", amqp_events_broker_url)
    orders = Connection("orders", amqp_events_broker_url)
    publisher = order_publisher()
    await shipping.start(
        event_stream_consumer(KEY, reserve),
        inbox_cleanup(inbox, retention=timedelta(0), interval=0.1),
    )
    await orders.start(
        event_stream_publisher(publisher),
        outbox_relay(outbox, retention=timedelta(0), cleanup_interval=0.1),
    )
    peaks = [0, 0]
    try:
        for round_ in range(25):
            await write(outbox, publisher, [f"r{round_}-{i}" for i in range(20)])
            await asyncio.sleep(0.04)
            peaks[0] = max(peaks[0], await count_rows(engine, outbox.table))
            peaks[1] = max(peaks[1], await count_rows(engine, inbox.table))
        await got.wait(500, within=20)

        async def emptied() -> bool:
            counts = [await count_rows(engine, t) for t in (outbox.table, inbox.table)]
            return counts == [0, 0]

        await eventually(emptied, what="both tables emptied by cleanup")
    finally:
        await orders.close()
        await shipping.close()
    # 500 went through each: a peak well below that shows rows were relayed and deleted while
    # the load went on, not only after it (the bound is loose: a busy machine lags behind).
    assert max(peaks) < 400, peaks


async def test_concurrent_writers_relay_and_inbox_never_see_database_is_locked(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox, inbox = Outbox(engine), Inbox(engine)
    await outbox.create_tables()
    await inbox.create_tables()
    await create_effects(engine)
    got: Collector[str] = Collector()

    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession, headers: Headers) -> None:
        await session.execute(effects.insert().values(order_id=event.id))
        got.add(event.id)

    shipping = Connection("shipping", amqp_events_broker_url)
    orders = Connection("orders", amqp_events_broker_url)
    publisher = order_publisher()
    await shipping.start(event_stream_consumer(KEY, reserve))
    await orders.start(event_stream_publisher(publisher), outbox_relay(outbox))

    async def writer(number: int) -> None:
        for i in range(10):
            async with AsyncSession(engine) as session, session.begin():
                await session.execute(effects.insert().values(order_id=f"w{number}"))
                await outbox.publish(session, publisher, OrderCreated(id=f"w{number}-{i}"))

    try:
        await asyncio.gather(*(writer(n) for n in range(12)))
        await got.wait(120, within=30)
        await eventually(lambda: all_sent(outbox), what="all sent")
    finally:
        await orders.close()
        await shipping.close()
    assert len(set(got.items)) == 120


async def test_the_relay_relays_thousands_of_rows_pipelined(
    engine: AsyncEngine, database_kind: str, amqp_events_rabbitmq_vhost_url: str
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    outbox = Outbox(engine)
    await outbox.create_tables()
    total = 3000
    direct = order_publisher()
    orders = Connection("orders", url)
    relaying = Connection("relaying", url)
    relayed_through = order_publisher()
    await orders.start(event_stream_publisher(direct))
    events = [OrderCreated(id=f"d-{i}") for i in range(total)]
    try:
        started = time.monotonic()
        await direct.publish_many(events)
        direct_rate = total / (time.monotonic() - started)
        await write(outbox, direct, [f"o-{i}" for i in range(total)])
        await relaying.start(event_stream_publisher(relayed_through), outbox_relay(outbox))
        started = time.monotonic()  # the relay's first pass begins as start() returns
        async with asyncio.timeout(60):
            while not await all_sent(outbox):  # noqa: ASYNC110 - no event says "all sent"
                await asyncio.sleep(0.005)  # finer than eventually(): the run takes ~0.2 s
        relay_rate = total / (time.monotonic() - started)

    finally:
        await relaying.close()
        await orders.close()
    # Speed is measured by the benchmark (`python -m benchmarks --only outbox-relay,...`),
    # side by side with publish_many in one run: the goal is 0.8 (issue 17). Since publish_many
    # writes a whole window with no task per event (the lean path), this machine's two cores,
    # shared by the client, RabbitMQ and PostgreSQL, give the relay 0.3-0.5 of it. A timed test
    # there cannot hold a line without failing on noise, so this one only catches a relay that
    # lost its pipelining: one publish per confirm round trip gives well under 0.1.
    floor = 0.15
    print(f"relay/publish_many on {database_kind}: {relay_rate / direct_rate:.2f}")
    assert relay_rate >= floor * direct_rate, (relay_rate, direct_rate)
