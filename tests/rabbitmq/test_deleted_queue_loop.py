"""A consumer whose queue an operator deletes (``rabbitmqctl delete_queue``) on the real broker.

The broker cancels the consumer (Basic.Cancel, consumer_cancel_notify); the connection must
either declare the queue and its bindings again, once, and consume again, or fail loudly. It
must never reconnect or retry in a loop. Each scenario watches the connection for a window of
``WINDOW`` seconds after the deletion and counts what it did: connections lost, consumers
cancelled and restored, declarations, the connections open in the test's vhost; then checks
that an event published afterwards is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    ConsumerLost,
    Publisher,
    PublishError,
    Route,
    close_listener,
    event_stream_publisher,
)
from amqp_events._topology import Topology
from amqp_events._transport._amqp import AmqpSession
from amqp_events._transport._recovery import RESTORE_ATTEMPTS
from tests import broker_control
from tests.helpers import Collector, delete_exchange, eventually

SERVICE = "ticker"
QUEUE = f"events.topic.exchange.queue.{SERVICE}"
EXCHANGE = "events.topic.exchange"
WINDOW = 3.0  # seconds watched after the deletion: long enough for a loop to show
MARKER = -1  # the event published after the window, to see that consuming resumed


class Tick(BaseModel):
    n: int


@pytest.fixture(autouse=True)
def _rabbitmqctl() -> None:
    broker_control.require_rabbitmqctl()


@dataclass
class Activity:
    """What the connection did, from its log and its sessions' declarations."""

    records: list[logging.LogRecord] = field(default_factory=list)
    declares: int = 0
    declares_failed: int = 0

    def count(self, text: str) -> int:
        return sum(text in r.getMessage() for r in self.records)

    @property
    def lost(self) -> int:
        return self.count("connection lost")

    @property
    def cancelled(self) -> int:
        return self.count("the broker cancelled the consumer")

    @property
    def restored(self) -> int:
        return self.count("restored")  # "consumer ... restored" and "reconnected; ... restored"

    def __str__(self) -> str:
        return (
            f"lost={self.lost} cancelled={self.cancelled} restored={self.restored} "
            f"declares={self.declares} (failed {self.declares_failed})"
        )


class _Recorder(logging.Handler):
    def __init__(self, activity: Activity) -> None:
        super().__init__(logging.DEBUG)
        self.activity = activity

    def emit(self, record: logging.LogRecord) -> None:
        self.activity.records.append(record)


@pytest.fixture
def activity(monkeypatch: pytest.MonkeyPatch) -> Iterator[Activity]:
    seen = Activity()
    original = AmqpSession.declare

    async def declare(self: AmqpSession, topology: Topology) -> None:
        seen.declares += 1
        try:
            await original(self, topology)
        except Exception:
            seen.declares_failed += 1
            raise

    monkeypatch.setattr(AmqpSession, "declare", declare)
    logger = logging.getLogger("amqp_events._transport")
    handler = _Recorder(seen)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def vhost_connections(url: str) -> int:
    """Client connections open in ``url``'s vhost (``list_connections`` lists every vhost)."""
    vhost = broker_control.vhost_of(url)
    listing = await broker_control.rabbitmqctl("list_connections", "vhost", "-q")
    return sum(line.strip() == vhost for line in listing.splitlines())


@contextlib.asynccontextmanager
async def ticker(
    url: str, losses: list[BaseException | None], *, slow: bool = False
) -> AsyncIterator[tuple[Connection, Collector[int], Publisher]]:
    """One service that publishes ``Tick`` and consumes it on its own queue: one connection,
    so every reconnection counted is this consumer's."""
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Tick, "Tick"))
    conn = Connection(SERVICE, url)

    @conn.event_stream_consumer("Tick")
    async def on_tick(event: Tick) -> None:
        if slow:
            await asyncio.sleep(0.05)
        got.add(event.n)

    async with conn:
        await conn.start(event_stream_publisher(publisher), close_listener(losses.append))
        await publisher.publish(Tick(n=0))
        await got.wait(1)
        yield conn, got, publisher


async def publish_for(publisher: Publisher, stop: asyncio.Event) -> None:
    """Publish a steady flow of events until ``stop``; failures during the outage are fine."""
    n = 1
    while not stop.is_set():
        with contextlib.suppress(PublishError):
            await publisher.publish(Tick(n=n))
        n += 1
        await asyncio.sleep(0.005)


async def handled_after(publisher: Publisher, got: Collector[int], within: float) -> None:
    await publisher.publish(Tick(n=MARKER))

    def seen() -> bool:
        return MARKER in got.items

    await eventually(seen, within=within)


@pytest.mark.parametrize(
    ("scenario", "drops"),
    [
        ("idle", 0),  # (a) deleted while nothing flows
        ("flowing", 0),  # (b) deleted while events flow, handlers in flight
        ("dropped", 1),  # (c) deleted, then the connection killed
        ("exchange", 0),  # (d) the queue and then its exchange deleted
    ],
)
async def test_deleted_queue_is_restored_once_without_a_reconnection_loop(
    amqp_events_rabbitmq_vhost_url: str, activity: Activity, scenario: str, drops: int
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    losses: list[BaseException | None] = []
    async with ticker(url, losses, slow=scenario == "flowing") as (_conn, got, publisher):
        stop = asyncio.Event()
        flow = None
        if scenario == "flowing":
            flow = asyncio.create_task(publish_for(publisher, stop))
            await got.wait(50)
        await broker_control.delete_queue(url, QUEUE)
        if scenario == "dropped":
            closed = await broker_control.close_vhost_connections(broker_control.vhost_of(url))
            assert closed == 1
        if scenario == "exchange":
            await delete_exchange(url, EXCHANGE)
        await asyncio.sleep(WINDOW)
        stop.set()
        if flow is not None:
            await flow

        # Bounded: one restore per deletion, a reconnection only per connection killed.
        assert activity.lost == drops, activity
        assert activity.cancelled <= 1, activity
        assert activity.restored <= 1 + drops, activity
        assert activity.declares <= 4, activity  # start, cancel, drop, exchange: at most one each
        assert len([e for e in losses if e is not None]) == drops, losses
        assert await vhost_connections(url) == 1

        # And consuming resumed: the queue is back, bound, with our consumer on it.
        await handled_after(publisher, got, within=10)
        assert activity.lost == drops, activity
        assert await vhost_connections(url) == 1


async def test_queue_that_cannot_be_declared_again_fails_loudly(
    amqp_events_rabbitmq_vhost_url: str, activity: Activity
) -> None:
    """Deleted, then declared by someone else with other arguments (no ``x-expires``): our
    declaration is refused (PRECONDITION_FAILED) every time. Retrying cannot help; the
    connection fails with ``ConsumerLost`` after a few tries (a close listener hears it)."""
    url = amqp_events_rabbitmq_vhost_url
    losses: list[BaseException | None] = []
    async with ticker(url, losses):
        raw = await aio_pika.connect(url)
        async with raw:
            channel = await raw.channel()
            await channel.queue_delete(QUEUE)
            await channel.declare_queue(QUEUE, durable=True)  # goamqp's would carry x-expires

        def told() -> bool:
            return any(isinstance(e, ConsumerLost) for e in losses)

        try:
            await eventually(told, within=WINDOW * 3)
        finally:
            # Bounded either way: a refused declaration is not worth more than a few tries.
            assert activity.declares_failed <= RESTORE_ATTEMPTS, activity
        [lost] = losses
        assert isinstance(lost, ConsumerLost)
        assert lost.queue == QUEUE
        assert lost.reply_code == 406
        assert "inequivalent arg" in str(lost)
        await asyncio.sleep(1)
        assert activity.declares_failed == RESTORE_ATTEMPTS, activity  # and no more after
