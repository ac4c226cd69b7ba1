"""``Connection.use``: setups carried by the connection, applied by ``start()``/``run()``."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from amqp_events import (
    ConfigurationError,
    Connection,
    MemoryBroker,
    Publisher,
    Route,
    SetupBuilder,
    event_stream_publisher,
)
from tests.helpers import Collector


class Noted(BaseModel):
    text: str


async def test_used_setups_apply_at_start_before_the_started_ones() -> None:
    broker = MemoryBroker()
    order: list[str] = []
    publisher = Publisher(Route(Noted, "Noted"))
    got: Collector[Noted] = Collector()

    def first(builder: SetupBuilder) -> None:
        order.append("used")

    def second(builder: SetupBuilder) -> None:
        order.append("given")

    async def on_noted(event: Noted) -> None:
        got.add(event)

    conn = Connection("noter", broker.url)
    conn.use(first, event_stream_publisher(publisher))
    conn.event_stream_consumer("Noted")(on_noted)
    async with conn:
        await conn.start(second)
        await publisher.publish(Noted(text="hi"))
        assert await got.wait(1) == [Noted(text="hi")]
    assert order == ["used", "given"]


async def test_use_refuses_non_setups_and_a_started_connection() -> None:
    conn = Connection("noter", MemoryBroker().url)
    with pytest.raises(ConfigurationError, match="use\\(\\) takes setup functions, got 42"):
        conn.use(42)  # type: ignore[arg-type]
    async with conn:
        await conn.start()
        with pytest.raises(ConfigurationError, match="cannot add setups: connection 'noter'"):
            conn.use(event_stream_publisher(Publisher(Route(Noted, "Noted"))))
