"""What every client's workloads share: the event, the topology, the timed loops, the tallies.

The loops that drive publishing live here, not in the client modules, so that every client is
timed by the same code and differs only in the one call it makes per message.
"""

from __future__ import annotations

import asyncio
import os
import time
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

__all__ = [
    "EXCHANGE",
    "PIPELINE_WINDOW",
    "PREFETCH",
    "QUEUE_EXPIRES_MS",
    "ROUTING_KEY",
    "WARMUP",
    "LatencyTally",
    "Order",
    "Publish",
    "Sample",
    "Stopwatch",
    "Tally",
    "make_order",
    "measure_latency",
    "paced_publish",
    "queue_name",
    "timed_pipelined",
    "timed_sequential",
    "wait_timeout",
]

# amqp-events' defaults, which every client is configured to match.
EXCHANGE = "events.topic.exchange"
ROUTING_KEY = "Order.Created"
# goamqp's and amqp-events' default prefetch; the other clients are set to it explicitly.
# AMQP_EVENTS_BENCH_PREFETCH and AMQP_EVENTS_BENCH_WINDOW (below) set other values for a run.
PREFETCH = int(os.environ.get("AMQP_EVENTS_BENCH_PREFETCH", "20"))
# amqp-events (as goamqp) declares its durable service queues with {"x-expires": this} and no
# other argument. The other clients declare the same, or RabbitMQ would refuse the second.
QUEUE_EXPIRES_MS = 432_000_000
# Publishes in flight at once in the pipelined workload.
PIPELINE_WINDOW = int(os.environ.get("AMQP_EVENTS_BENCH_WINDOW", "1000"))
WARMUP = 50  # untimed publishes first: lazy imports, first-call caches, channel buffers

_NOTE = "benchmark order: " + "x" * 48  # a body of about 100 bytes, like a small real event


class Order(BaseModel):
    """The event every client sends and decodes."""

    id: str
    amount: int
    note: str
    sent_ns: int = 0  # time.monotonic_ns() at publishing, for the latency workload


def make_order(i: int, sent_ns: int = 0) -> Order:
    return Order(id=str(i), amount=i, note=_NOTE, sent_ns=sent_ns)


def queue_name(service: str) -> str:
    """The durable queue amqp-events names for ``service`` (README, "Wire rules")."""
    return f"{EXCHANGE}.queue.{service}"


def wait_timeout(messages: int) -> float:
    """How long to wait for ``messages`` to arrive before calling the rest lost.

    Generous (at least 100 msg/s), so that a slow shared machine never fails a run on timing.
    """
    return 30.0 + messages / 100


# One confirmed publish of one order: the only thing that differs between clients' publishing.
Publish = Callable[[Order], Coroutine[Any, Any, object]]


@dataclass
class Sample:
    """One measured run of one workload with one client."""

    messages: int  # measured messages
    received: int  # of those, confirmed by the broker (publish) or handled once (consume)
    wall: float  # seconds
    cpu: float  # seconds of this process's CPU (time.process_time)
    latencies_ms: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    series: list[list[float]] = field(default_factory=list)  # e.g. [messages, RSS MiB] points

    @property
    def rate(self) -> float:
        return self.messages / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.messages * 1e6 if self.messages else 0.0


class Stopwatch:
    """Wall and process CPU time between ``start`` and ``stop``."""

    __slots__ = ("_cpu0", "_wall0", "cpu", "wall")

    def __init__(self) -> None:
        self._wall0 = self._cpu0 = 0.0
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0


class Tally:
    """Counts distinct orders handled, by id ``0 .. expected-1``; a duplicate is not counted.

    The clock runs from the first order handled to the ``expected``-th, so connection setup and
    consumer start-up, which differ between clients and do not recur, are left out.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.duplicates = 0
        self.done = asyncio.Event()
        self.clock = Stopwatch()
        self._seen = bytearray(expected)

    def add(self, order: Order) -> None:
        i = int(order.id)
        if self._seen[i]:
            self.duplicates += 1
            return
        if self.count == 0:
            self.clock.start()
        self._seen[i] = 1
        self.count += 1
        if self.count == self.expected:
            self.clock.stop()
            self.done.set()

    async def wait(self) -> None:
        """Until every order was handled, or :func:`wait_timeout` passed (the rest are lost)."""
        try:
            async with asyncio.timeout(wait_timeout(self.expected)):
                await self.done.wait()
        except TimeoutError:
            self.clock.stop()

    def sample(self) -> Sample:
        # The first order only starts the clock, so the time covers expected - 1 intervals:
        # a bias of 1/expected on the rate, below the noise at the default sizes.
        return Sample(
            messages=self.expected,
            received=self.count,
            wall=self.clock.wall,
            cpu=self.clock.cpu,
            duplicates=self.duplicates,
        )


class LatencyTally(Tally):
    """A tally that also records, per order, the time from publishing to the handler."""

    def __init__(self, expected: int) -> None:
        super().__init__(expected)
        self._latency_ns = array("q", bytes(8 * expected))

    def add(self, order: Order) -> None:
        self._latency_ns[int(order.id)] = time.monotonic_ns() - order.sent_ns
        super().add(order)

    def latencies_ms(self, skip: int) -> list[float]:
        """Latencies of the orders handled, in ms, without the first ``skip`` (warm-up)."""
        return [ns / 1e6 for ns in self._latency_ns[skip:] if ns > 0]


async def timed_sequential(publish: Publish, messages: int) -> Sample:
    """Publish ``messages`` orders one after the other, each awaited until confirmed."""
    for i in range(WARMUP):
        await publish(make_order(i))
    clock = Stopwatch()
    confirmed = 0
    clock.start()
    for i in range(WARMUP, WARMUP + messages):
        await publish(make_order(i))
        confirmed += 1
    clock.stop()
    return Sample(messages, confirmed, clock.wall, clock.cpu, extra={"warmup": WARMUP})


async def timed_pipelined(publish: Publish, messages: int) -> Sample:
    """Publish ``messages`` orders in windows of :data:`PIPELINE_WINDOW` awaited together."""
    await asyncio.gather(*(publish(make_order(i)) for i in range(WARMUP)))
    clock = Stopwatch()
    confirmed = 0
    clock.start()
    end = WARMUP + messages
    for first in range(WARMUP, end, PIPELINE_WINDOW):
        window = range(first, min(first + PIPELINE_WINDOW, end))
        await asyncio.gather(*(publish(make_order(i)) for i in window))
        confirmed += len(window)
    clock.stop()
    return Sample(messages, confirmed, clock.wall, clock.cpu, extra={"warmup": WARMUP})


async def paced_publish(publish: Publish, messages: int, rate: float) -> None:
    """Publish ``messages`` orders at ``rate`` per second, each stamped with its send time.

    Each publish runs as a task of its own, so that a slow confirm does not hold back the
    next message: the rate is the schedule's, not the confirm round trip's.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()
    start = loop.time()
    for i in range(messages):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(publish(make_order(i, sent_ns=time.monotonic_ns())))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


async def measure_latency(
    publish: Publish, tally: LatencyTally, messages: int, rate: float, warmup: int
) -> Sample:
    """Publish at ``rate`` while a consumer feeds ``tally``; latencies skip the ``warmup``."""
    clock = Stopwatch()
    clock.start()
    await paced_publish(publish, messages, rate)
    await tally.wait()
    clock.stop()
    return Sample(
        messages,
        tally.count,
        clock.wall,
        clock.cpu,
        latencies_ms=tally.latencies_ms(warmup),
        duplicates=tally.duplicates,
    )
