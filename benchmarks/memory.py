"""Workload (e): does an amqp-events service's memory (RSS) grow over a long run?

One connection publishes (pipelined, confirmed) and consumes its own events. The run happens in a
fresh child process, so that what earlier workloads left in the benchmark's own heap neither
hides nor fakes growth. RSS is read after a full garbage collection, at regular points; the first
tenth of the run is the warm-up (buffers, caches and pools reaching their working size), and the
growth is counted from there to the end.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import resource
from concurrent.futures import ProcessPoolExecutor

from amqp_events import Publisher, Route, event_stream_publisher, with_prefetch_limit

from .common import (
    PIPELINE_WINDOW,
    PREFETCH,
    ROUTING_KEY,
    Order,
    Sample,
    Stopwatch,
    Tally,
    make_order,
    wait_timeout,
)
from .workloads_events import consuming_connection

__all__ = ["measure_memory", "rss_mb"]

POINTS = 20  # RSS readings over the run; the second one (10%) is the baseline
# Published but not yet handled: bounded, so that the broker's queue, not ours, stays short and
# the figure is the client's memory, not a backlog's.
MAX_BACKLOG = 5 * PIPELINE_WINDOW


def rss_mb() -> float:
    """This process's resident set size now, in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PacedTally(Tally):
    """A tally the publisher can wait on until the consumer has caught up to a count."""

    def __init__(self, expected: int) -> None:
        super().__init__(expected)
        self._target = 0
        self._reached = asyncio.Event()

    def add(self, order: Order) -> None:
        super().add(order)
        if self.count >= self._target:
            self._reached.set()

    async def reach(self, count: int) -> None:
        """Until ``count`` orders were handled; TimeoutError when the rest seem lost."""
        self._target = count
        async with asyncio.timeout(wait_timeout(MAX_BACKLOG)):
            while self.count < count:
                self._reached.clear()
                await self._reached.wait()


def _reading(tally: Tally) -> tuple[int, float]:
    gc.collect()  # count what is kept, not garbage a later collection would free anyway
    return tally.count, rss_mb()


async def _publish_and_consume(url: str, service: str, messages: int) -> Sample:
    tally = _PacedTally(messages)
    publisher = Publisher(Route(Order, ROUTING_KEY))
    every = max(messages // POINTS, 1)
    readings: list[tuple[int, float]] = []
    clock = Stopwatch()
    async with consuming_connection(service, url, tally) as conn:
        await conn.start(event_stream_publisher(publisher), with_prefetch_limit(PREFETCH))
        readings.append(_reading(tally))
        clock.start()
        next_reading = every
        for first in range(0, messages, PIPELINE_WINDOW):
            window = range(first, min(first + PIPELINE_WINDOW, messages))
            await asyncio.gather(*(publisher.publish(make_order(i)) for i in window))
            await tally.reach(window.stop - MAX_BACKLOG)
            if tally.count >= next_reading:
                readings.append(_reading(tally))
                next_reading += every
        await tally.wait()
        clock.stop()
        readings.append(_reading(tally))
    base = next((r for r in readings if r[0] >= messages // 10), readings[0])
    end = readings[-1]
    growth = end[1] - base[1]
    per_message = growth * 2**20 / (end[0] - base[0]) if end[0] > base[0] else 0.0
    return Sample(
        messages,
        tally.count,
        clock.wall,
        clock.cpu,
        duplicates=tally.duplicates,
        extra={
            "rss_start_mb": readings[0][1],
            "rss_base_mb": base[1],
            "rss_end_mb": end[1],
            "rss_peak_mb": max(r[1] for r in readings),
            "growth_mb": growth,
            "growth_bytes_per_message": per_message,
        },
        series=[[float(count), mb] for count, mb in readings],
    )


def _run(url: str, service: str, messages: int) -> Sample:
    return asyncio.run(_publish_and_consume(url, service, messages))


async def measure_memory(url: str, service: str, messages: int) -> Sample:
    """Run the workload in a fresh (spawned, not forked) child process and return its sample."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return await asyncio.wrap_future(pool.submit(_run, url, service, messages))
    finally:
        pool.shutdown()
