"""What an operator reads at INFO: the broker, the topology, the shutdown; nothing per message."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

from amqp_events import Connection, Publisher, Route, event_stream_publisher
from tests.helpers import Collector

MESSAGES = 25


class Tick(BaseModel):
    n: int


def _info(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.INFO and record.name.startswith("amqp_events")
    ]


async def test_info_logs_topology_and_shutdown_but_no_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="amqp_events")
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Tick, "Tick"))
    conn = Connection("clock", "memory://logging-test")

    @conn.event_stream_consumer("Tick")
    async def on_tick(tick: Tick) -> None:
        got.add(tick.n)

    await conn.start(event_stream_publisher(publisher))
    started = "\n".join(_info(caplog))
    assert "memory://logging-test" in started
    assert "exchange 'events.topic.exchange' (topic)" in started
    queue = "events.topic.exchange.queue.clock"
    assert f"queue {queue!r} (durable)" in started
    assert f"queue '{queue}.dlq'" in started
    assert f"bound queue {queue!r} to exchange 'events.topic.exchange' with 'Tick'" in started

    caplog.clear()
    for n in range(MESSAGES):
        await publisher.publish(Tick(n=n))
    assert sorted(await got.wait(MESSAGES)) == list(range(MESSAGES))
    assert _info(caplog) == []  # nothing per message at INFO

    await conn.close()
    closing = _info(caplog)
    assert any(
        "waiting up to 30.0s (shutdown_timeout) for 0 running handler(s)" in line
        for line in closing
    ), closing
    assert closing[-1] == "clock: closed"


async def test_each_message_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="amqp_events")
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Tick, "Tick"))
    async with Connection("clock", "memory://logging-debug") as conn:

        @conn.event_stream_consumer("Tick")
        async def on_tick(tick: Tick) -> None:
            got.add(tick.n)

        await conn.start(event_stream_publisher(publisher))
        await publisher.publish(Tick(n=1))
        await got.wait(1)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "clock: published 'Tick' to 'events.topic.exchange'" in debug
    assert "clock: handled 'Tick' from 'events.topic.exchange.queue.clock'" in debug


async def test_redacts_the_password_it_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="amqp_events")
    async with Connection("clock", "memory://user:s3cret@logging-test/") as conn:
        await conn.start()
    logged = "\n".join(_info(caplog))
    assert "memory://" in logged
    assert "s3cret" not in logged
