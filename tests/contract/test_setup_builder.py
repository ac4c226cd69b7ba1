"""Setup functions written by users, on the public ``SetupBuilder``, on both brokers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    ConfigurationError,
    Connection,
    Publisher,
    Route,
    Setup,
    SetupBuilder,
    event_stream_publisher,
)
from tests.helpers import Collector, queue_depth, raw_publish


class AuditEntry(BaseModel):
    what: str


def audit_log(got: Collector[AuditEntry]) -> Setup:
    """A reusable setup: a fanout exchange and a queue of the service's own, consumed."""

    async def on_entry(entry: AuditEntry) -> None:
        got.add(entry)

    def apply(builder: SetupBuilder) -> None:
        queue = f"audit.queue.{builder.service_name}"
        builder.declare_exchange("audit.fanout.exchange", "fanout")
        builder.declare_queue(queue)
        builder.bind(queue, "audit.fanout.exchange", "")
        builder.consume(queue, "#", on_entry)

    return apply


async def test_a_setup_of_ones_own_declares_binds_and_consumes(
    amqp_events_broker_url: str,
) -> None:
    got: Collector[AuditEntry] = Collector()
    setup = audit_log(got)
    async with Connection("auditor", amqp_events_broker_url) as conn:
        await conn.start(setup)
        await raw_publish(
            amqp_events_broker_url, "audit.fanout.exchange", "Any.Key", b'{"what":"x"}', {}
        )
        assert await got.wait(1) == [AuditEntry(what="x")]
        # The queue got its dead-letter queue as every consumed queue does.
        assert await queue_depth(amqp_events_broker_url, "audit.queue.auditor.dlq") == 0


async def test_a_background_job_runs_while_started_and_is_cancelled_at_close(
    amqp_events_broker_url: str,
) -> None:
    publisher = Publisher(Route(AuditEntry, "Audit.Entry"))
    got: Collector[AuditEntry] = Collector()
    confirmed, stopped = asyncio.Event(), asyncio.Event()

    async def heartbeat() -> None:
        # Runs after start: the publisher is attached and the consumer is up.
        await publisher.publish(AuditEntry(what="alive"))
        confirmed.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    conn = Connection("beating", amqp_events_broker_url)

    @conn.event_stream_consumer("Audit.Entry")
    async def on_entry(entry: AuditEntry) -> None:
        got.add(entry)

    def jobs(builder: SetupBuilder) -> None:
        builder.run_while_started("heartbeat", heartbeat)

    await conn.start(event_stream_publisher(publisher), jobs)
    assert await got.wait(1) == [AuditEntry(what="alive")]
    await asyncio.wait_for(confirmed.wait(), 10)
    assert not stopped.is_set()
    await conn.close()
    assert stopped.is_set()


async def test_a_failing_background_job_stops_the_connection_and_run_raises_it(
    amqp_events_broker_url: str,
) -> None:
    class RelayBroke(Exception):
        pass

    async def broken() -> None:
        raise RelayBroke("the database is gone")

    def jobs(builder: SetupBuilder) -> None:
        builder.run_while_started("relay", broken)

    conn = Connection("failing-job", amqp_events_broker_url)
    with pytest.raises(RelayBroke, match="database is gone"):
        await asyncio.wait_for(conn.run(jobs), 10)
    assert conn.state == "closed"


async def test_builder_refuses_bad_declarations_before_connecting() -> None:
    def bad_type(builder: SetupBuilder) -> None:
        builder.declare_exchange("x", "topics")  # type: ignore[arg-type]

    def twice(builder: SetupBuilder) -> None:
        builder.declare_queue("q")
        builder.declare_queue("q", durable=False)

    async def work() -> None:
        return None

    def same_job_twice(builder: SetupBuilder) -> None:
        builder.run_while_started("job", work)
        builder.run_while_started("job", work)

    for setup, message in (
        (bad_type, "type must be one of topic, direct, headers, fanout, got 'topics'"),
        (twice, "queue 'q' declared twice with different settings"),
        (same_job_twice, "unique to the connection, got 'job'"),
    ):
        # A broker that does not exist: the error must come before any connection attempt.
        conn = Connection("refusing", "amqp://guest:guest@127.0.0.1:1/")
        with pytest.raises(ConfigurationError, match=message):
            await conn.start(setup)
        assert conn.state == "new"
