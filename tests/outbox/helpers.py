"""What the outbox tests share: an event, an effects table the inbox handlers write to, and
writing events through the outbox."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, Headers, Publisher, Route, event_stream_consumer
from amqp_events.outbox import Outbox
from tests.helpers import Collector

KEY = "Order.Created"
QUEUE = "events.topic.exchange.queue.shipping"


class OrderCreated(BaseModel):
    id: str
    n: int = 0


def order_publisher() -> Publisher:
    return Publisher(Route(OrderCreated, KEY))


effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("consumer", String(64), nullable=False, server_default=""),
)


async def create_effects(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(effects_metadata.create_all)


async def effect_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(effects.c.order_id, func.count()).group_by(effects.c.order_id)
            )
        ).all()
    return {row[0]: int(row[1]) for row in rows}


async def write(
    outbox: Outbox,
    publisher: Publisher,
    ids: Sequence[str],
    *,
    partition_key: str | None = None,
    mandatory: bool | None = None,
) -> list[str]:
    """Write one event per id in one transaction; return their message ids."""
    async with AsyncSession(outbox.engine) as session, session.begin():
        return [
            await outbox.publish(
                session,
                publisher,
                OrderCreated(id=i),
                partition_key=partition_key,
                mandatory=mandatory,
            )
            for i in ids
        ]


async def sent_count(outbox: Outbox) -> int:
    table = outbox.table
    async with outbox.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.sent_at.is_not(None))
        )
    return int(count or 0)


async def all_sent(outbox: Outbox) -> bool:
    return await outbox.pending() == 0


async def started_consumer(url: str, got: Collector[str], key: str = KEY) -> Connection:
    """A started service that adds the id of each event with ``key`` to ``got``."""
    shipping = Connection("shipping" if key == KEY else "audit", url)

    async def on_event(event: dict[str, object], headers: Headers) -> None:
        got.add(str(event["id"]))

    await shipping.start(event_stream_consumer(key, on_event))
    return shipping
