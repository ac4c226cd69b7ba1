"""The relay's gauges (issue 17, item 4: "a log line and a metric" for a held-back partition):
with ``with_prometheus(registry)`` on the relay's connection."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, Publisher, Route, event_stream_publisher, with_prometheus
from amqp_events.outbox import Outbox, outbox_relay
from tests.helpers import eventually

from .conftest import engine_for, sqlite_url
from .helpers import KEY, OrderCreated, all_sent, write


class OrderLost(BaseModel):
    id: str


def gauge(registry: CollectorRegistry, name: str, service: str) -> float | None:
    return registry.get_sample_value(name, {"service": service, "table": "amqp_events_outbox"})


async def test_a_refused_row_shows_as_a_blocked_partition_and_pending_rows(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    outbox = Outbox(engine)
    await outbox.create_tables()
    registry = CollectorRegistry()
    publisher = Publisher(Route(OrderCreated, KEY), Route(OrderLost, "Order.Lost"))
    orders = Connection("orders", amqp_events_broker_url)
    # with_prometheus after the relay: the relay finds the registry once the plan is complete.
    await orders.start(
        event_stream_publisher(publisher),
        outbox_relay(outbox, retry_backoff=(5.0, 5.0)),
        with_prometheus(registry),
    )
    pending = "amqp_events_outbox_pending_rows"
    blocked = "amqp_events_outbox_blocked_partitions"
    try:
        await eventually(lambda: gauge(registry, pending, "orders") == 0, what="gauges set")
        assert gauge(registry, blocked, "orders") == 0
        async with AsyncSession(engine) as session, session.begin():
            # Nobody consumes Order.Lost: published mandatory, it is unroutable and refused.
            await outbox.publish(
                session, publisher, OrderLost(id="lost"), partition_key="a", mandatory=True
            )
            for i in range(3):
                await outbox.publish(
                    session, publisher, OrderCreated(id=f"a-{i}"), partition_key="a"
                )
        await write(outbox, publisher, ["b-0"], partition_key="b")

        async def held() -> bool:
            return (
                gauge(registry, blocked, "orders") == 1 and gauge(registry, pending, "orders") == 4
            )

        await eventually(held, within=10, what="partition a blocked, its 4 rows pending")
        assert [p.partition_key for p in await outbox.blocked_partitions()] == ["a"]
        # What the relay publishes is counted as any publish is: b-0 confirmed, lost returned.
        published = "amqp_events_published_total"
        labels = {"service": "orders", "exchange": "events.topic.exchange"}
        assert registry.get_sample_value(published, {**labels, "outcome": "confirmed"}) == 1
        assert registry.get_sample_value(published, {**labels, "outcome": "returned"}) == 1
    finally:
        await orders.close()
    # Bounded labels: service and table, never a partition key.
    samples = [s for m in registry.collect() for s in m.samples if "outbox" in s.name]
    assert samples
    assert all(set(s.labels) == {"service", "table"} for s in samples)


async def test_a_relay_without_with_prometheus_keeps_no_gauges(
    tmp_path: Path, amqp_events_broker_url: str
) -> None:
    # One database is enough (SQLite): nothing here depends on which.
    engine = engine_for(sqlite_url(tmp_path / "outbox.db"))
    outbox = Outbox(engine)
    await outbox.create_tables()
    registry = CollectorRegistry()
    publisher = Publisher(Route(OrderCreated, KEY))
    plain = Connection("plain", amqp_events_broker_url)
    counted = Connection("counted", amqp_events_broker_url)
    await plain.start(event_stream_publisher(publisher), outbox_relay(outbox))
    await counted.start(with_prometheus(registry))
    try:
        await write(outbox, publisher, ["x"])
        await eventually(lambda: all_sent(outbox), what="relayed")
    finally:
        await plain.close()
        await counted.close()
        await engine.dispose()
    names = {m.name for m in registry.collect()}
    assert not any("outbox" in n for n in names), names
