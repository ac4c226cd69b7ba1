"""The burst-mode helpers and fixtures users test their services with, on both brokers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    DecodeError,
    Publisher,
    RetryPolicy,
    Route,
    event_stream_publisher,
    with_retry_policy,
)
from amqp_events.testing import (
    BindingInfo,
    ConnectionFactory,
    ExchangeInfo,
    QueueInfo,
    capture,
    run_until_idle,
)
from tests.helpers import BrokerUnderTest, eventually, raw_publish


class Ping(BaseModel):
    n: int


class Pong(BaseModel):
    n: int


async def test_run_until_idle_waits_for_retries_and_chains(
    amqp_events_connection_factory: ConnectionFactory,
) -> None:
    """A handler that fails once is retried through its delay queue; a handler that publishes
    triggers another service; run_until_idle returns only when all of it settled."""
    attempts: list[int] = []
    pongs = Publisher(Route(Pong, "Pong"))
    pinger, ponger, source = (
        amqp_events_connection_factory(n) for n in ("pinger", "ponger", "source")
    )

    @ponger.event_stream_consumer("Ping")
    async def on_ping(ping: Ping) -> None:
        attempts.append(ping.n)
        if len(attempts) == 1:
            raise RuntimeError("first try fails")
        await pongs.publish(Pong(n=ping.n))

    @pinger.event_stream_consumer("Pong")
    async def on_pong(pong: Pong) -> None:
        pass

    pings = Publisher(Route(Ping, "Ping"))
    await ponger.start(
        event_stream_publisher(pongs), with_retry_policy(RetryPolicy(attempts=3, delays=(0.3,)))
    )
    await pinger.start()
    await source.start(event_stream_publisher(pings))
    outcome = await run_until_idle(pinger, ponger, source, publish=[(pings, Ping(n=7))])
    assert attempts == [7, 7]
    # across services the order is the broker's: ponger's ack may come after pinger's
    assert sorted((h.service, repr(h.event)) for h in outcome.handled) == [
        ("pinger", repr(Pong(n=7))),
        ("ponger", repr(Ping(n=7))),
    ]
    assert [(p.service, p.routing_key) for p in outcome.published] == [
        ("source", "Ping"),
        ("ponger", "Pong"),
    ]
    assert outcome.dead_lettered == []


async def test_capture_records_dead_letters(amqp_events_broker_url: str) -> None:
    async with Connection("strict", amqp_events_broker_url) as strict:

        @strict.event_stream_consumer("Ping")
        async def on_ping(ping: Ping) -> None:
            pass

        await strict.start()
        async with capture(strict) as outcome:
            await raw_publish(amqp_events_broker_url, "events.topic.exchange", "Ping", b"[]", {})
    [dead] = outcome.dead_lettered
    assert (dead.service, dead.reason, dead.body) == ("strict", "undecodable", b"[]")
    assert dead.exception_type is DecodeError
    assert "does not decode into Ping" in dead.cause
    assert dead.event == []  # not a Ping, but JSON


async def test_dead_letter_shows_the_exception_type_and_the_decoded_event(
    amqp_events_broker_url: str,
) -> None:
    async with Connection("fragile", amqp_events_broker_url) as fragile:

        @fragile.event_stream_consumer("Ping")
        async def on_ping(ping: Ping) -> None:
            raise KeyError(f"no such ping {ping.n}")

        await fragile.start(with_retry_policy(RetryPolicy(attempts=1)))
        async with capture(fragile) as outcome:
            await raw_publish(
                amqp_events_broker_url, "events.topic.exchange", "Ping", b'{"n": 4}', {}
            )
            await raw_publish(
                amqp_events_broker_url, "", "events.topic.exchange.queue.fragile", b"\xff", {}
            )
    failed, unhandled = sorted(outcome.dead_lettered, key=lambda d: d.reason)
    assert (failed.reason, failed.exception_type, failed.event) == (
        "handler-failed",
        KeyError,
        Ping(n=4),
    )
    assert failed.body == b'{"n": 4}'
    assert "no such ping 4" in failed.cause
    assert "Ping(n=4)" in repr(failed)
    assert "KeyError" in repr(failed)
    # no handler for its key, and not JSON: the bytes
    assert (unhandled.reason, unhandled.exception_type) == ("no-handler", None)
    assert unhandled.event == unhandled.body == b"\xff"


async def test_a_handler_that_never_returns_is_named_in_the_timeout(
    amqp_events_broker_url: str,
) -> None:
    never = asyncio.Event()
    pings = Publisher(Route(Ping, "Ping"))
    async with (
        Connection("stuck", amqp_events_broker_url, shutdown_timeout=0.1) as stuck,
        Connection("source", amqp_events_broker_url) as source,
    ):

        @stuck.event_stream_consumer("Ping")
        async def on_ping(ping: Ping) -> None:
            await never.wait()

        await stuck.start()
        await source.start(event_stream_publisher(pings))
        with pytest.raises(TimeoutError, match="still busy after 0.5s: stuck"):
            await run_until_idle(stuck, source, publish=[(pings, Ping(n=1))], timeout=0.5)


SHIPPING_QUEUE = "events.topic.exchange.queue.shipping"


async def test_both_brokers_report_a_queue_in_one_shape(
    amqp_events_broker_url: str, request: pytest.FixtureRequest
) -> None:
    """``MemoryBroker.queue_info`` and ``VhostView.queue`` (likewise for exchanges and
    bindings) return equal values for the same queue: each case compares with the same literal."""
    broker = BrokerUnderTest.for_test(amqp_events_broker_url, request)

    async def reports(expected: QueueInfo) -> bool:
        # The management API's counters lag by its statistics interval: wait for them.
        return await broker.queue_info(SHIPPING_QUEUE) == expected

    def shipping_queue(*, ready: int, consumers: int) -> QueueInfo:
        return QueueInfo(
            name=SHIPPING_QUEUE,
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={"x-expires": 432000000},
            messages_ready=ready,
            messages_unacknowledged=0,
            consumers=consumers,
        )

    async with Connection("shipping", amqp_events_broker_url) as shipping:

        @shipping.event_stream_consumer("Ping")
        async def on_ping(ping: Ping) -> None:
            pass

        await shipping.start()
        await eventually(lambda: reports(shipping_queue(ready=0, consumers=1)), within=15)
    for n in range(2):
        await raw_publish(amqp_events_broker_url, "events.topic.exchange", "Ping", b"{}", {"n": n})
    await eventually(lambda: reports(shipping_queue(ready=2, consumers=0)), within=15)

    assert await broker.bindings(SHIPPING_QUEUE) == [
        BindingInfo(
            queue=SHIPPING_QUEUE, exchange="events.topic.exchange", routing_key="Ping", arguments={}
        )
    ]
    assert await broker.exchange_info("events.topic.exchange") == ExchangeInfo(
        name="events.topic.exchange",
        type="topic",
        durable=True,
        auto_delete=False,
        internal=False,
        arguments={},
    )
