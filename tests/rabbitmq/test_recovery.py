"""Recovery on the real broker: every exchange, queue, binding and consumer comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Publisher,
    PublishError,
    Route,
    close_listener,
    event_stream_publisher,
)
from tests import broker_control
from tests.helpers import Collector, eventually

pytestmark = [pytest.mark.disruptive]


class Tick(BaseModel):
    n: int


@pytest.fixture(autouse=True)
def _rabbitmqctl() -> None:
    broker_control.require_rabbitmqctl()


@contextlib.asynccontextmanager
async def ticker_and_source(
    url: str, **source_options: Any
) -> AsyncIterator[tuple[Collector[int], Publisher]]:
    """Two started services: "ticker" collects the ``Tick`` events the publisher of "source"
    (made with ``source_options``) sends."""
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Tick, "Tick"))
    conn = Connection("ticker", url)

    @conn.event_stream_consumer("Tick")
    async def on_tick(event: Tick) -> None:
        got.add(event.n)

    async with conn, Connection("source", url, **source_options) as source:
        await conn.start()
        await source.start(event_stream_publisher(publisher))
        yield got, publisher


async def test_killed_connections_are_restored(amqp_events_rabbitmq_vhost_url: str) -> None:
    got: Collector[int] = Collector()
    losses: list[BaseException | None] = []
    publisher = Publisher(Route(Tick, "Tick"))
    conn = Connection("ticker", amqp_events_rabbitmq_vhost_url)

    @conn.event_stream_consumer("Tick")
    async def on_tick(event: Tick) -> None:
        got.add(event.n)

    async with conn:
        await conn.start(event_stream_publisher(publisher), close_listener(losses.append))
        await publisher.publish(Tick(n=1))
        await got.wait(1)
        await broker_control.close_all_connections()
        await publisher.publish(Tick(n=2))  # waits for the new connection
        assert sorted(set(await got.wait(2))) == [1, 2]
    assert len(losses) == 2
    assert losses[-1] is None


async def test_deleted_queue_comes_back_and_keeps_consuming(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    async with ticker_and_source(amqp_events_rabbitmq_vhost_url) as (got, publisher):
        await publisher.publish(Tick(n=1))
        await got.wait(1)
        await broker_control.delete_queue(
            amqp_events_rabbitmq_vhost_url, "events.topic.exchange.queue.ticker"
        )

        async def delivered_again() -> bool:
            try:
                await publisher.publish(Tick(n=2))
            except PublishError:
                return False
            await got.settle(0.3)
            return 2 in got.items

        # The queue and its binding return; from then on events reach the handler again.
        await eventually(delivered_again, within=20)


async def test_broker_restart_is_survived(amqp_events_rabbitmq_vhost_url: str) -> None:
    async with ticker_and_source(amqp_events_rabbitmq_vhost_url, publish_timeout=60) as (
        got,
        publisher,
    ):
        await publisher.publish(Tick(n=1))
        await got.wait(1)
        async with broker_control.outage():
            pending = asyncio.ensure_future(publisher.publish(Tick(n=2)))
            await asyncio.sleep(1)
            assert not pending.done()  # waiting for the broker, not failing
        await pending
        assert 2 in await got.wait(2, within=30)


async def test_publishes_during_an_outage_confirm_or_fail_clearly(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    publisher = Publisher(Route(Tick, "Tick"))
    async with Connection("source", amqp_events_rabbitmq_vhost_url, publish_timeout=3) as source:
        await source.start(event_stream_publisher(publisher))
        async with broker_control.outage():
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(publisher.publish(Tick(n=n)) for n in range(1000)),
                    return_exceptions=True,
                ),
                timeout=20,  # never a hang: each publish ends by its publish_timeout
            )
    assert all(isinstance(r, PublishError) for r in results), {type(r) for r in results}
    assert "not confirmed within 3" in str(results[0])


async def test_publishes_during_a_5s_outage_are_confirmed_after_recovery(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    async with ticker_and_source(amqp_events_rabbitmq_vhost_url, publish_timeout=60) as (
        got,
        publisher,
    ):
        async with broker_control.outage():
            publishes = asyncio.gather(*(publisher.publish(Tick(n=n)) for n in range(1000)))
            await asyncio.sleep(5)
        await asyncio.wait_for(publishes, 60)  # every one confirmed, none failed
        assert set(await got.wait(1000, within=60)) == set(range(1000))


async def test_multi_host_url_skips_a_dead_host(amqp_events_rabbitmq_url: str) -> None:
    # Port 1 on loopback answers nothing: the second host is the live broker.
    live = amqp_events_rabbitmq_url.split("@", 1)[1].split("/", 1)[0]
    url = amqp_events_rabbitmq_url.replace(f"@{live}", f"@127.0.0.1:1,{live}")
    publisher = Publisher(Route(Tick, "Tick"))
    async with Connection("multi", url) as conn:
        await conn.start(event_stream_publisher(publisher))
        await publisher.publish(Tick(n=1))
