"""The workloads on amqp-events, through its public API only, as its README shows it."""

from __future__ import annotations

from amqp_events import (
    Connection,
    Publisher,
    Route,
    event_stream_publisher,
    with_prefetch_limit,
)

from .client import Client
from .common import (
    PREFETCH,
    ROUTING_KEY,
    LatencyTally,
    Order,
    Sample,
    Tally,
    measure_latency,
    timed_pipelined,
    timed_sequential,
)

__all__ = ["CLIENT", "consuming_connection"]


def consuming_connection(service: str, url: str, tally: Tally) -> Connection:
    """A connection whose handler feeds ``tally``: the service's queue, ``Order.Created``."""
    conn = Connection(service, url)

    @conn.event_stream_consumer(ROUTING_KEY, Order)
    async def on_order(event: Order) -> None:
        tally.add(event)

    return conn


async def publish_sequential(url: str, service: str, messages: int) -> Sample:
    publisher = Publisher(Route(Order, ROUTING_KEY))
    async with Connection(service, url) as conn:
        await conn.start(event_stream_publisher(publisher))
        return await timed_sequential(publisher.publish, messages)


async def publish_pipelined(url: str, service: str, messages: int) -> Sample:
    publisher = Publisher(Route(Order, ROUTING_KEY))
    async with Connection(service, url) as conn:
        await conn.start(event_stream_publisher(publisher))
        return await timed_pipelined(publisher.publish, messages)


async def consume(url: str, service: str, messages: int) -> Sample:
    tally = Tally(messages)
    async with consuming_connection(service, url, tally) as conn:
        await conn.start(with_prefetch_limit(PREFETCH))
        await tally.wait()
    return tally.sample()


async def latency(url: str, service: str, messages: int, rate: float, warmup: int) -> Sample:
    tally = LatencyTally(messages)
    publisher = Publisher(Route(Order, ROUTING_KEY))
    async with consuming_connection(service, url, tally) as conn:
        await conn.start(event_stream_publisher(publisher), with_prefetch_limit(PREFETCH))
        return await measure_latency(publisher.publish, tally, messages, rate, warmup)


CLIENT = Client("amqp-events", publish_sequential, publish_pipelined, consume, latency)
