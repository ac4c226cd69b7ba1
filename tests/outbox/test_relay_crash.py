"""The relay killed anywhere loses nothing (issue 17, item 2): rows it published but did not
mark are published again with the same message id, and the inbox absorbs the copy. Broken at
one point by a test hook, and at random points by SIGKILL of a real relay process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, Metadata, event_stream_consumer, event_stream_publisher
from amqp_events.outbox import Inbox, Outbox, outbox_relay
from amqp_events.outbox._relay import faults
from tests.helpers import Collector

from .conftest import process_args
from .helpers import (
    KEY,
    OrderCreated,
    create_effects,
    effect_counts,
    effects,
    order_publisher,
    sent_count,
    write,
)

ROOT = Path(__file__).resolve().parents[2]


async def start_consumers(
    url: str, inbox: Inbox, handled: Collector[str], deliveries: Collector[str]
) -> list[Connection]:
    """shipping: an inbox handler with effects; audit: every delivery's message id."""
    shipping = Connection("shipping", url)

    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession) -> None:
        await session.execute(effects.insert().values(order_id=event.id))
        handled.add(event.id)

    async def audit(event: OrderCreated, metadata: Metadata) -> None:
        deliveries.add(str(metadata.message_id))

    audit_connection = Connection("audit", url)
    await shipping.start(event_stream_consumer(KEY, reserve))
    await audit_connection.start(event_stream_consumer(KEY, audit))
    return [shipping, audit_connection]


async def test_a_relay_stopped_between_confirm_and_mark_republishes_with_the_same_ids(
    engine: AsyncEngine, amqp_events_broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox, inbox = Outbox(engine), Inbox(engine)
    await outbox.create_tables()
    await inbox.create_tables()
    await create_effects(engine)
    handled: Collector[str] = Collector()
    deliveries: Collector[str] = Collector()
    consumers = await start_consumers(amqp_events_broker_url, inbox, handled, deliveries)
    confirmed: list[str] = []
    stuck = asyncio.Event()

    async def crash_after_confirm(message_ids: Sequence[str]) -> None:
        confirmed.extend(message_ids)
        stuck.set()
        await asyncio.Event().wait()  # until the relay is stopped: its marks never happen

    monkeypatch.setattr(faults, "after_confirm", crash_after_confirm)
    first = Connection("orders", amqp_events_broker_url)
    publisher = order_publisher()
    await first.start(event_stream_publisher(publisher), outbox_relay(outbox))
    try:
        ids = await write(outbox, publisher, [f"e-{i}" for i in range(20)])
        await asyncio.wait_for(stuck.wait(), 10)
        assert sorted(await deliveries.wait(20)) == sorted(ids)
    finally:
        await first.close()  # the relay dies holding confirmed, unmarked rows
    assert sorted(confirmed) == sorted(ids)
    assert await sent_count(outbox) == 0
    monkeypatch.setattr(faults, "after_confirm", None)
    second = Connection("orders", amqp_events_broker_url)
    await second.start(event_stream_publisher(order_publisher()), outbox_relay(outbox))
    try:
        copies = await deliveries.wait(40)
        await handled.settle(0.3)
    finally:
        await second.close()
        for consumer in consumers:
            await consumer.close()
    assert sorted(copies) == sorted(ids + ids)  # the same message ids, twice
    assert await effect_counts(engine) == {f"e-{i}": 1 for i in range(20)}
    assert await sent_count(outbox) == 20


@contextlib.asynccontextmanager
async def relay_process(
    amqp_url: str, database_url: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.outbox.relay_service",
        amqp_url,
        *process_args(database_url),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()


async def test_a_relay_process_killed_at_random_loses_nothing_and_duplicates_nothing(
    engine: AsyncEngine, database_url: str, amqp_events_rabbitmq_vhost_url: str
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    outbox, inbox = Outbox(engine), Inbox(engine)
    await outbox.create_tables()
    await inbox.create_tables()
    await create_effects(engine)
    handled: Collector[str] = Collector()
    deliveries: Collector[str] = Collector()
    consumers = await start_consumers(url, inbox, handled, deliveries)
    writer = Connection("orders", url)  # its publisher makes the rows; it relays nothing
    publisher = order_publisher()
    await writer.start(event_stream_publisher(publisher))
    total = 1000
    ids = [f"e-{i}" for i in range(total)]
    rng = random.Random()
    kills = 0
    try:
        for start in range(0, total, 50):
            await write(outbox, publisher, ids[start : start + 50])
        while len(handled.items) < total * 3 // 4 and kills < 6:
            async with relay_process(url, database_url):
                # Kill it while it works: inside a publish, between confirm and mark ...
                await handled.wait(min(total, len(handled.items) + 1), within=30)
                await asyncio.sleep(rng.uniform(0.0, 0.15))
            kills += 1
        async with relay_process(url, database_url):
            await handled.wait(total, within=60)
            await handled.settle(0.5)
    finally:
        await writer.close()
        for consumer in consumers:
            await consumer.close()
    assert kills >= 2
    assert await effect_counts(engine) == dict.fromkeys(ids, 1)
    assert await sent_count(outbox) == total
    assert len(set(deliveries.items)) == total  # every message id got through
