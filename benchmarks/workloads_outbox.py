"""The ``outbox-relay`` workload: amqp-events' transactional outbox relay (``outbox_relay``)
publishing rows written beforehand, on PostgreSQL when one answers
(``AMQP_EVENTS_POSTGRES_URL``, else the local server), else on SQLite in a temporary file.

The rows are written first, untimed; the clock runs from the relaying connection's start to the
last row marked sent. Its rate next to ``publish-pipelined`` (amqp-events) is the relay's
overhead over ``publish_many``-style pipelining: the database round trips that remain.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .common import ROUTING_KEY, Sample, Stopwatch, make_order, wait_timeout

__all__ = ["DATABASE", "relay", "unavailable"]

POSTGRES_URL = os.environ.get(
    "AMQP_EVENTS_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
WRITE_BATCH = 1000  # rows per writing transaction
DATABASE: dict[str, str] = {}  # "kind": the database the last run used, for the report's notes


def unavailable() -> str | None:
    """Why the workload cannot run here: the ``outbox`` extra missing."""
    missing = [m for m in ("sqlalchemy", "aiosqlite") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed (pip install 'amqp-events[outbox]')"
    return None


async def _postgres_answers() -> bool:
    if importlib.util.find_spec("asyncpg") is None:
        return False
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(POSTGRES_URL, connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # unreachable, refused, no such database: SQLite then
        return False
    finally:
        await engine.dispose()
    return True


@asynccontextmanager
async def _database() -> AsyncIterator[object]:
    """An engine on an empty database of this run: a fresh PostgreSQL schema, dropped after,
    or a temporary SQLite file."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    if await _postgres_answers():
        DATABASE["kind"] = "PostgreSQL"
        schema = f"amqp_events_bench_{uuid.uuid4().hex[:12]}"
        admin = create_async_engine(POSTGRES_URL)
        try:
            async with admin.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            engine = create_async_engine(
                POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}}
            )
            try:
                yield engine
            finally:
                await engine.dispose()
        finally:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await admin.dispose()
        return
    DATABASE["kind"] = "SQLite"
    with tempfile.TemporaryDirectory(prefix="amqp-events-bench-") as directory:
        engine = create_async_engine(f"sqlite+aiosqlite:///{Path(directory) / 'outbox.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()


async def relay(url: str, service: str, messages: int) -> Sample:
    """Write ``messages`` orders to the outbox, then time the relay publishing them all."""
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from amqp_events import Connection, Publisher, Route, event_stream_publisher
    from amqp_events.outbox import Outbox, outbox_relay

    from .common import Order

    async with _database() as made:
        assert isinstance(made, AsyncEngine)
        outbox = Outbox(made)
        await outbox.create_tables()
        publisher = Publisher(Route(Order, ROUTING_KEY))
        # The writer: its publisher only makes the rows (routes, exchange, service name).
        async with Connection(service, url) as writer:
            await writer.start(event_stream_publisher(publisher))
            for first in range(0, messages, WRITE_BATCH):
                async with AsyncSession(made) as session, session.begin():
                    for i in range(first, min(first + WRITE_BATCH, messages)):
                        await outbox.publish(session, publisher, make_order(i))
        clock = Stopwatch()
        async with Connection(service, url) as relaying:
            # The relay's first pass begins as start() returns: the clock starts there.
            await relaying.start(
                event_stream_publisher(Publisher(Route(Order, ROUTING_KEY))),
                outbox_relay(outbox),
            )
            clock.start()
            try:
                async with asyncio.timeout(wait_timeout(messages)):
                    # No event says "all sent": ask the table, every 20 ms (a few ms late
                    # on a run of seconds; polling more often costs the process CPU).
                    while True:
                        left = await outbox.pending()
                        if not left:
                            break
                        await asyncio.sleep(0.02)
            except TimeoutError:
                pass  # the rest are counted as not received
            clock.stop()
        left = await outbox.pending()
    return Sample(messages, messages - left, clock.wall, clock.cpu)
