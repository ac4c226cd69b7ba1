"""Watermill's reconnect cases: every connection is cut from the broker side mid-stream.

On RabbitMQ this runs ``rabbitmqctl close_all_connections``, which cuts every client of the
broker, so the RabbitMQ cases are marked ``disruptive``. The in-memory broker cuts only its own.
"""

from __future__ import annotations

import asyncio

import pytest

from amqp_events import Connection, Publisher, PublishError
from tests.conformance._support import (
    KEY,
    ROUTE,
    Msg,
    new_messages,
    publishing,
    service_queue,
    subscribe_initialize,
)
from tests.helpers import BrokerUnderTest, Collector, queue_depth

both_brokers_rabbitmq_disruptive = pytest.mark.parametrize(
    "broker",
    ["memory", pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.disruptive])],
    indirect=True,
)


class Stream:
    """Publishes messages one after another on each of ``workers`` tasks until stopped,
    retrying a publish that failed as Watermill's ``publishWithRetry`` does."""

    def __init__(self, publisher: Publisher, workers: int = 5) -> None:
        self.publisher = publisher
        self.confirmed: Collector[str] = Collector()
        self.failed: list[PublishError] = []
        self.unexpected: list[str] = []  # publishes that raised anything but PublishError
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._work()) for _ in range(workers)]

    async def _work(self) -> None:
        while not self._stop.is_set():
            [message] = new_messages(1)
            for _ in range(5):
                try:
                    await self.publisher.publish(message)
                except PublishError as exc:
                    self.failed.append(exc)
                    continue
                except Exception as exc:  # a bug: recorded, the stream goes on
                    self.unexpected.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.confirmed.add(message.id)
                break
            # The in-memory broker confirms without suspending: let the others run.
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@both_brokers_rabbitmq_disruptive
async def test_reconnect(broker: BrokerUnderTest) -> None:
    """Watermill ``TestReconnect``: while messages stream from publishers to a subscriber,
    every connection is cut twice (Watermill restarts the broker at 1/3 and 1/2 of the
    stream). Both sides reconnect by themselves, and every message whose publish returned is
    consumed (duplicates allowed: at-least-once)."""
    url = broker.url
    await subscribe_initialize(url, "subscriber", KEY)
    got: Collector[str] = Collector()
    subscriber = Connection("subscriber", url)

    @subscriber.event_stream_consumer(KEY)
    async def on_msg(event: Msg) -> None:
        got.add(event.id)

    async with subscriber, publishing(url, ROUTE, publish_timeout=20) as publisher:
        await subscriber.start()
        stream = Stream(publisher)
        try:
            await stream.confirmed.wait(100)
            for _ in range(2):
                await broker.close_all_connections()
                # Flowing again: 50 more publishes confirmed after the cut.
                await stream.confirmed.wait(len(stream.confirmed.items) + 50, within=20)
        except TimeoutError:
            raise AssertionError(
                f"publishing stalled after a cut; unexpected errors: {stream.unexpected[:3]}"
            ) from None
        finally:
            await stream.stop()
        assert stream.unexpected == [], "publish() must return or raise PublishError"
        confirmed = set(stream.confirmed.items)
        assert len(confirmed) >= 200
        async with asyncio.timeout(30):
            while not confirmed <= set(got.items):
                await got.wait(len(got.items) + 1, within=30)
    assert stream.failed == []  # publishes wait for the new connection, within publish_timeout


@both_brokers_rabbitmq_disruptive
async def test_no_ack_redelivered_after_connection_killed(broker: BrokerUnderTest) -> None:
    """Watermill ``TestNoAck``, at-least-once through a cut: the subscriber's connection dies
    while its handler runs, before the ack. The message goes back to the queue and the
    subscriber, reconnected by itself, gets it again and acks it."""
    url = broker.url
    queue = service_queue("subscriber")
    await subscribe_initialize(url, "subscriber", KEY)
    [message] = new_messages(1)
    calls: Collector[Msg] = Collector()
    release = asyncio.Event()
    subscriber = Connection("subscriber", url)

    @subscriber.event_stream_consumer(KEY)
    async def on_msg(event: Msg) -> None:
        calls.add(event)
        if len(calls.items) == 1:
            await release.wait()  # the first delivery is never acked before the cut

    async with publishing(url, ROUTE) as publisher, subscriber:
        try:
            await subscriber.start()
            await publisher.publish(message)
            assert await calls.wait(1) == [message]
            await broker.close_all_connections()
            assert await calls.wait(2, within=20) == [message, message]
        finally:
            release.set()
    assert await queue_depth(url, queue) == 0
