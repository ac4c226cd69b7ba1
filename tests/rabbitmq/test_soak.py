"""Soak: 10,000 events published while the broker restarts and every connection is killed.

A background storm restarts RabbitMQ 3 times and kills all connections 10 times while the events
are being published. Publishing is paced (batches of 100 at 500 events/s, at most 300 in flight)
and follows the storm: the ids come in 14 slices, and slice ``k`` opens when disruption ``k``
starts, so publishing goes on before, during and after every disruption.

What must hold: every publish is confirmed or raises ``PublishError`` (then it is published again,
as a user would); every event is consumed at least once; duplicates are counted and reported;
afterwards the queues of the vhost are empty, the service queue has exactly one consumer and no
other queue has any, and the vhost holds exactly the two connections of the test (nothing doubled
or leaked by the reconnections).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
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
    with_prefetch_limit,
)
from tests import broker_control
from tests.helpers import eventually

pytestmark = [pytest.mark.disruptive]

EVENTS = 10_000
IN_FLIGHT = 300  # publishes started and not yet confirmed, at most
BATCH = 100  # publishes started together
RATE = 500.0  # publishes started per second (so that the publishing lasts as long as the storm)
MAX_ATTEMPTS = 5  # publishes of one event, counting re-publishes after PublishError
RETRY_PAUSE = 0.2  # seconds before publishing again, times the attempt number
RESTART_DOWN_FOR = 1.0  # seconds the broker stays stopped in a restart

# 13 disruptions, the 3 restarts spread among the 10 kills.
STORM = ["kill", "kill", "restart", "kill", "kill", "kill", "restart"]
STORM += ["kill", "kill", "restart", "kill", "kill", "kill"]
SLICE = math.ceil(EVENTS / (len(STORM) + 1))

CONSUMER = "soak-consumer"
QUEUE = f"events.topic.exchange.queue.{CONSUMER}"


def describe(exc: BaseException) -> str:
    """``Type: message`` without object addresses, so that equal failures count together."""
    return f"{type(exc).__name__}: {re.sub(' at 0x[0-9a-f]+', '', str(exc))}"[:300]


class SoakEvent(BaseModel):
    id: int


class SoakProbe(BaseModel):
    """Published to see the publisher's connection confirm; bound to no queue, so dropped."""


@pytest.fixture(autouse=True)
def _broker_left_running() -> Iterator[None]:
    broker_control.require_rabbitmqctl()
    yield
    # Whatever happened (a failure in the middle of a restart), leave the broker running.
    subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120, check=False)
    subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True, timeout=120, check=False)


@dataclass
class Progress:
    """What the publishing and the storm did; ``changed`` fires on every update."""

    issued: int = 0  # events whose first publish started
    confirmed: set[int] = field(default_factory=set)
    publish_errors: Counter[str] = field(default_factory=Counter)  # PublishError, by message
    unexpected: Counter[str] = field(default_factory=Counter)  # anything else raised by publish
    republished: set[int] = field(default_factory=set)
    connected: bool = True  # the publisher's connection, as far as we know
    losses: int = 0  # of the publisher's connection
    through_outage: int = 0  # publishes that spanned a loss or started while disconnected
    in_flight: int = 0
    in_flight_at_loss: list[int] = field(default_factory=list)
    disruptions: list[tuple[str, float]] = field(default_factory=list)  # (kind, seconds)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.changed.set()

    async def until_issued(self, count: int, within: float) -> None:
        try:
            async with asyncio.timeout(within):
                while self.issued < count:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{count} events not issued within {within}s; {self.summary()}"
            ) from None

    async def until_connected(self, within: float, probe: Callable[[], Awaitable[None]]) -> None:
        """Until a confirm came in since the last loss: the next disruption then hits a live
        publisher connection, not one still being restored. When nothing is in flight (the
        loss was noticed after the last confirm, and the next slice waits for this), ``probe``
        publishes an event nobody consumes until one is confirmed."""
        try:
            async with asyncio.timeout(within):
                while not self.connected:
                    if self.in_flight:
                        self.changed.clear()
                        await self.changed.wait()
                        continue
                    try:
                        await probe()
                    except PublishError:
                        await asyncio.sleep(RETRY_PAUSE)
                    else:
                        self.connected = True
        except TimeoutError:
            raise AssertionError(
                f"the publisher did not reconnect within {within}s; {self.summary()}"
            ) from None

    def on_close(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.losses += 1
            self.connected = False
            self.in_flight_at_loss.append(self.in_flight)

    def summary(self) -> str:
        return (
            f"issued {self.issued}, confirmed {len(self.confirmed)}, in flight {self.in_flight}, "
            f"publisher connection lost {self.losses} times, disruptions {self.disruptions}"
        )


async def publish_one(publisher: Publisher, event_id: int, progress: Progress) -> None:
    """Publish until confirmed, as a user would: publish again after PublishError.

    Anything but PublishError breaks the contract: it is recorded (the test fails on it at the
    end, with the whole summary) and the event is published again too.
    """
    progress.in_flight += 1
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            losses, connected = progress.losses, progress.connected
            try:
                await publisher.publish(SoakEvent(id=event_id))
            except PublishError as exc:
                progress.publish_errors[describe(exc)] += 1
                progress.republished.add(event_id)
            except Exception as exc:
                progress.unexpected[describe(exc)] += 1
            else:
                if not connected or progress.losses != losses:
                    progress.through_outage += 1
                progress.connected = True  # a confirm just came in
                progress.confirmed.add(event_id)
                return
            await asyncio.sleep(RETRY_PAUSE * attempt)  # back off, then publish again
        raise AssertionError(f"event {event_id} not confirmed in {MAX_ATTEMPTS} attempts")
    finally:
        progress.in_flight -= 1
        progress.touch()


async def feed(publisher: Publisher, opened: list[asyncio.Event], progress: Progress) -> None:
    """Publish every event: slice ``k`` once ``opened[k]`` is set, paced to ``RATE``."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(event_id: int) -> None:
        try:
            await publish_one(publisher, event_id, progress)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for k, gate in enumerate(opened):
            await gate.wait()
            ids = range(k * SLICE, min((k + 1) * SLICE, EVENTS))
            for start in range(ids.start, ids.stop, BATCH):
                for event_id in range(start, min(start + BATCH, ids.stop)):
                    await slots.acquire()
                    group.create_task(one(event_id))
                    progress.issued += 1
                progress.touch()
                await asyncio.sleep(BATCH / RATE)  # pacing on purpose, see the module docstring


async def storm(
    opened: list[asyncio.Event], progress: Progress, probe: Callable[[], Awaitable[None]]
) -> None:
    """Disruption ``k`` starts when slice ``k - 1`` is nearly all issued, and opens slice ``k``."""
    actions: dict[str, Callable[[], Awaitable[None]]] = {
        "kill": broker_control.close_all_connections,
        "restart": lambda: broker_control.restart_broker(down_for=RESTART_DOWN_FOR),
    }
    for k, kind in enumerate(STORM, start=1):
        await progress.until_issued(min(k * SLICE, EVENTS) - BATCH, within=120)
        await progress.until_connected(within=60, probe=probe)
        opened[k].set()
        started = time.monotonic()
        await actions[kind]()
        progress.disruptions.append((kind, round(time.monotonic() - started, 1)))


async def list_rows(*args: str) -> list[dict[str, Any]]:
    output = await broker_control.rabbitmqctl(*args, "--formatter", "json", "--quiet")
    rows = json.loads(output or "[]")
    assert isinstance(rows, list), output
    return rows


async def test_soak_10000_events_through_restarts_and_killed_connections(
    amqp_events_rabbitmq_vhost_url: str, amqp_events_rabbitmq_vhost: str
) -> None:
    url, vhost = amqp_events_rabbitmq_vhost_url, amqp_events_rabbitmq_vhost
    began = time.monotonic()
    received: Counter[int] = Counter()
    all_received = asyncio.Event()
    progress = Progress()
    consumer = Connection(CONSUMER, url, publish_timeout=60)

    @consumer.event_stream_consumer("Soak.Event")
    async def on_event(event: SoakEvent) -> None:
        received[event.id] += 1
        if len(received) == EVENTS:
            all_received.set()

    publisher = Publisher(Route(SoakEvent, "Soak.Event"))
    prober = Publisher(Route(SoakProbe, "Soak.Probe"))
    source = Connection("soak-publisher", url, publish_timeout=60)
    opened = [asyncio.Event() for _ in range(len(STORM) + 1)]
    opened[0].set()
    async with consumer, source:
        await consumer.start(with_prefetch_limit(200))
        await source.start(
            event_stream_publisher(publisher),
            event_stream_publisher(prober),
            close_listener(progress.on_close),
        )
        async with asyncio.timeout(150):
            async with asyncio.TaskGroup() as group:
                group.create_task(storm(opened, progress, lambda: prober.publish(SoakProbe())))
                group.create_task(feed(publisher, opened, progress))
            published_in = time.monotonic() - began
            try:
                async with asyncio.timeout(60):
                    await all_received.wait()
            except TimeoutError:
                missing = sorted(set(range(EVENTS)) - set(received))
                pytest.fail(
                    f"lost: {len(missing)} events never consumed, e.g. {missing[:20]}; "
                    f"{progress.summary()}"
                )

            # Let the redeliveries still under way arrive, then count.
            async def drained() -> bool:
                rows = await list_rows("list_queues", "-p", vhost, "name", "messages")
                return {row["name"]: row["messages"] for row in rows}.get(QUEUE) == 0

            await eventually(drained, within=30, what="the service queue drained")
            queues = await list_rows("list_queues", "-p", vhost, "name", "messages", "consumers")
            connections = [
                row["name"]
                for row in await list_rows("list_connections", "vhost", "name")
                if row["vhost"] == vhost
            ]
    took = time.monotonic() - began
    duplicates = sum(received.values()) - len(received)
    restarts, kills = STORM.count("restart"), STORM.count("kill")
    line = (
        f"soak: {EVENTS} events, {restarts} restarts, {kills} kills, {duplicates} duplicates "
        f"({sum(1 for n in received.values() if n > 1)} events delivered more than once), "
        f"{sum(progress.publish_errors.values())} PublishError re-published "
        f"({len(progress.republished)} events), {sum(progress.unexpected.values())} other "
        f"errors, {progress.through_outage} publishes waited "
        f"through an outage, in flight at each loss {progress.in_flight_at_loss}, published in "
        f"{published_in:.1f}s, {took:.1f}s"
    )
    print(line)
    for message, count in (progress.publish_errors + progress.unexpected).most_common(5):
        print(f"  raised x{count}: {message}")

    assert set(received) == set(range(EVENTS)), f"lost events; {line}"
    assert progress.confirmed == set(range(EVENTS)), line
    unexpected = dict(progress.unexpected)
    assert not unexpected, f"publish raised other than PublishError: {unexpected}; {line}"
    consumers = {q["name"]: q["consumers"] for q in queues if q["consumers"]}
    assert consumers == {QUEUE: 1}, f"consumers doubled or gone: {queues}; {line}"
    parked = {q["name"]: q["messages"] for q in queues if q["messages"]}
    assert not parked, f"messages left in queues (retry, dead letter): {parked}; {line}"
    assert len(connections) == 2, f"connections left in the vhost: {connections}; {line}"
    assert progress.losses >= len(STORM), f"the storm missed the publisher; {line}"
    assert progress.through_outage > 0, f"no publish went through an outage; {line}"


async def test_publishes_cut_off_by_killed_connections_raise_nothing_but_publish_error(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    """Publishes waiting for their confirm when the broker kills the connection: each one is
    confirmed after the reconnection or raises PublishError, never anything else."""
    outcomes: Counter[str] = Counter()
    losses: list[BaseException | None] = []
    publisher = Publisher(Route(SoakEvent, "Soak.Event"))
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        while not stop.is_set():
            results = await asyncio.gather(
                *(publisher.publish(SoakEvent(id=n)) for n in range(200)), return_exceptions=True
            )
            for result in results:
                outcomes["confirmed" if result is None else describe(result)] += 1

    async def kill_during_publishing(losses_before: int) -> None:
        await broker_control.close_all_connections()
        await eventually(lambda: len(losses) > losses_before, within=10, what="the loss")
        confirmed = outcomes["confirmed"]  # then publishing goes on over the new connection
        await eventually(lambda: outcomes["confirmed"] > confirmed, within=30, what="a confirm")

    async with Connection(
        "soak-publisher", amqp_events_rabbitmq_vhost_url, publish_timeout=30
    ) as source:
        await source.start(event_stream_publisher(publisher), close_listener(losses.append))
        publishing = asyncio.create_task(keep_publishing())
        try:
            for _ in range(3):
                await kill_during_publishing(len(losses))
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await publishing
    unexpected = {
        k: n for k, n in outcomes.items() if k.split(":")[0] not in ("confirmed", "PublishError")
    }
    assert not unexpected, f"publishes raised something other than PublishError: {unexpected}"
