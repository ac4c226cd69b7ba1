"""The memory broker's virtual time: retry delays and TTLs pass at once while it is idle, in
deadline order; real time stays the default."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    MemoryBroker,
    Publisher,
    RetryPolicy,
    Route,
    event_stream_publisher,
)
from amqp_events._errors import ConfigurationError
from amqp_events._transport._base import Delivery
from amqp_events._transport.memory import broker_for_url
from amqp_events._transport.memory._session import MemoryOpener
from amqp_events.testing import run_until_idle


@pytest.fixture
def virtual() -> Iterator[MemoryBroker]:
    broker = MemoryBroker(virtual_time=True)
    yield broker
    broker.reset()


@pytest.fixture
def real() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.reset()


class Inbox:
    """A consumer callback that records deliveries and acks them unless told not to."""

    def __init__(self, *, ack: bool = True) -> None:
        self.deliveries: list[Delivery] = []
        self._ack = ack

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self._ack:
            await delivery.ack()

    @property
    def bodies(self) -> list[bytes]:
        return [delivery.body for delivery in self.deliveries]


def delay_queue(broker: MemoryBroker, name: str, ttl_ms: int, back_to: str) -> None:
    """A queue that holds messages ``ttl_ms`` and then dead-letters them to ``back_to``."""
    broker.declare_queue(
        name,
        arguments={
            "x-message-ttl": ttl_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": back_to,
        },
    )


class OrderCreated(BaseModel):
    id: str


async def test_a_failing_handler_with_the_default_policy_ends_in_the_dlq_at_once(
    virtual: MemoryBroker,
) -> None:
    calls: list[float] = []

    async def ship(order: OrderCreated) -> None:
        calls.append(time.monotonic())
        raise RuntimeError(f"cannot ship {order.id}")

    shipping, orders = Connection("shipping", virtual.url), Connection("orders", virtual.url)
    shipping.event_stream_consumer("Order.Created")(ship)
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    await shipping.start()
    await orders.start(event_stream_publisher(publisher))
    try:
        started = time.monotonic()
        outcome = await run_until_idle(
            shipping, publish=[(publisher, OrderCreated(id="1"))], timeout=5
        )
        elapsed = time.monotonic() - started
    finally:
        await shipping.close()
        await orders.close()
    assert len(calls) == RetryPolicy().attempts
    [dead] = outcome.dead_lettered
    assert (dead.reason, dead.exception_type) == ("handler-failed", RuntimeError)
    assert elapsed < 1.0
    # The clock skipped the delays, less the real time that passed.
    assert virtual.time_skipped > sum(RetryPolicy().delays) - 1


async def test_retry_delays_come_back_in_deadline_order(virtual: MemoryBroker) -> None:
    virtual.declare_queue("work")
    delay_queue(virtual, "work.retry.5000", 5000, "work")
    delay_queue(virtual, "work.retry.1000", 1000, "work")
    inbox = Inbox()
    virtual.connect().consume("work", inbox)
    virtual.publish("", "work.retry.5000", b"after 5 s")
    virtual.publish("", "work.retry.1000", b"after 1 s")
    started = time.monotonic()
    await virtual.wait_until_idle(timeout=1)
    assert time.monotonic() - started < 0.5
    assert inbox.bodies == [b"after 1 s", b"after 5 s"]
    assert 4.5 < virtual.time_skipped <= 5.0
    # x-death records the virtual time each one expired at.
    first, second = (d.headers["x-death"][0]["time"] for d in inbox.deliveries)
    assert timedelta(seconds=3) <= second - first <= timedelta(seconds=5)
    assert second - datetime.now(UTC) >= timedelta(seconds=4)


async def test_message_ttls_expire_in_deadline_order(virtual: MemoryBroker) -> None:
    virtual.declare_queue("expired")
    for ttl in (300, 100, 200):
        delay_queue(virtual, f"hold-{ttl}", ttl, "expired")
        virtual.publish("", f"hold-{ttl}", f"{ttl} ms".encode())
    # In one queue only the head expires, as in RabbitMQ: the short TTL behind waits for it.
    virtual.declare_queue(
        "fifo", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "expired"}
    )
    virtual.publish("", "fifo", b"fifo 5000 ms", expiration=5000)
    virtual.publish("", "fifo", b"fifo 1000 ms", expiration=1000)
    await virtual.wait_until_idle(timeout=1)
    assert [m.body for m in virtual.messages("expired")] == [
        b"100 ms",
        b"200 ms",
        b"300 ms",
        b"fifo 5000 ms",
        b"fifo 1000 ms",
    ]


async def test_the_clock_waits_while_a_delivery_is_unsettled(virtual: MemoryBroker) -> None:
    virtual.declare_queue("busy")
    virtual.declare_queue("expired")
    delay_queue(virtual, "hold", 10_000, "expired")
    holder = Inbox(ack=False)
    virtual.connect().consume("busy", holder)
    virtual.publish("", "busy", b"held")
    virtual.publish("", "hold", b"waits")
    for _ in range(20):
        await asyncio.sleep(0)
    assert [m.body for m in virtual.messages("hold")] == [b"waits"]
    assert virtual.time_skipped == 0.0
    await holder.deliveries[0].ack()
    await virtual.wait_until_idle(timeout=1)
    assert [m.body for m in virtual.messages("expired")] == [b"waits"]


async def test_x_expires_reads_the_clock_but_does_not_pull_it(virtual: MemoryBroker) -> None:
    virtual.declare_queue("unused", arguments={"x-expires": 1000})
    for _ in range(20):
        await asyncio.sleep(0)
    assert "unused" in virtual.queue_names()
    assert virtual.time_skipped == 0.0
    # A message expiry 5 s away pulls the clock past the queue's expiry: both happen.
    virtual.declare_queue("expired")
    delay_queue(virtual, "hold", 5000, "expired")
    virtual.publish("", "hold", b"m")
    await virtual.wait_until_idle(timeout=1)
    assert "unused" not in virtual.queue_names()
    assert [m.body for m in virtual.messages("expired")] == [b"m"]


async def test_real_time_is_unchanged(real: MemoryBroker) -> None:
    assert not real.virtual_time
    real.declare_queue("expired")
    delay_queue(real, "hold", 200, "expired")
    real.publish("", "hold", b"m")
    await real.wait_until_idle(timeout=1)  # idle at once: it does not wait for the TTL
    await asyncio.sleep(0.05)
    assert [m.body for m in real.messages("hold")] == [b"m"]
    assert real.time_skipped == 0.0
    await asyncio.sleep(0.25)
    assert [m.body for m in real.messages("expired")] == [b"m"]
    assert real.messages("hold") == []


async def test_virtual_time_still_expires_in_real_time_when_never_idle(
    virtual: MemoryBroker,
) -> None:
    virtual.declare_queue("busy")
    virtual.declare_queue("expired")
    delay_queue(virtual, "hold", 100, "expired")
    virtual.connect().consume("busy", Inbox(ack=False))
    virtual.publish("", "busy", b"never acked")
    virtual.publish("", "hold", b"m")
    await asyncio.sleep(0.2)
    assert [m.body for m in virtual.messages("expired")] == [b"m"]
    assert virtual.time_skipped == 0.0


def test_the_memory_broker_fixture_uses_virtual_time(
    amqp_events_memory_broker: MemoryBroker,
) -> None:
    assert amqp_events_memory_broker.virtual_time
    assert "virtual time" in repr(amqp_events_memory_broker)


def test_a_url_can_create_a_broker_on_virtual_time() -> None:
    broker = broker_for_url("memory://test-virtual-time-url?virtual_time=1")
    assert broker.virtual_time
    assert broker_for_url("memory://test-virtual-time-url") is broker
    assert broker_for_url(broker.url + "?virtual_time=true") is broker
    with pytest.raises(ConfigurationError, match="already runs on virtual time"):
        broker_for_url("memory://test-virtual-time-url?virtual_time=0")
    assert not broker_for_url("memory://test-virtual-time-url-2?virtual_time=0").virtual_time


@pytest.mark.parametrize(
    "url",
    ["memory://x?virtual_time=maybe", "memory://x?virtual_time", "memory://x?virtual_time=1&a=1"],
)
def test_bad_virtual_time_queries_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="virtual_time"):
        MemoryOpener(url)
