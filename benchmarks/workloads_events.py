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
    PIPELINE_WINDOW,
    PREFETCH,
    ROUTING_KEY,
    WARMUP,
    LatencyTally,
    Order,
    Sample,
    Stopwatch,
    Tally,
    make_order,
    measure_latency,
    timed_pipelined,
    timed_sequential,
)

__all__ = ["CLIENT", "consuming_connection", "publish_many"]


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


async def publish_many(url: str, service: str, messages: int) -> Sample:
    """``Publisher.publish_many`` in windows of :data:`PIPELINE_WINDOW`: what the
    ``publish-pipelined`` workload does through ``publish``, in one batch per window."""
    publisher = Publisher(Route(Order, ROUTING_KEY))
    async with Connection(service, url) as conn:
        await conn.start(event_stream_publisher(publisher))
        await publisher.publish_many([make_order(i) for i in range(WARMUP)])
        clock = Stopwatch()
        clock.start()
        for first in range(WARMUP, WARMUP + messages, PIPELINE_WINDOW):
            window = range(first, min(first + PIPELINE_WINDOW, WARMUP + messages))
            await publisher.publish_many([make_order(i) for i in window])
        clock.stop()
    return Sample(messages, messages, clock.wall, clock.cpu, extra={"warmup": WARMUP})


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
