"""Graceful close, the same on the in-memory broker and on RabbitMQ.

``close()`` stops consuming, lets running handlers finish (up to ``shutdown_timeout``) and acks
them, then closes; messages whose handlers did not finish go back to the queue for the next
connection. Publishing after ``close()`` raises ``PublishError``; closing twice is harmless.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
from pydantic import BaseModel

from amqp_events import Connection, Publisher, PublishError, Route, event_stream_publisher
from amqp_events._transport.memory import broker_for_url
from tests.helpers import Collector, eventually, queue_depth, raw_publish

SERVICE = "closer"
QUEUE = f"events.topic.exchange.queue.{SERVICE}"


class Job(BaseModel):
    id: int


async def consumer_count(url: str, queue: str) -> int:
    """Consumers attached to ``queue``, as the broker sees them."""
    if url.startswith("memory:"):
        return broker_for_url(url).queue_info(queue).consumers
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.consumer_count is not None
        return declared.declaration_result.consumer_count


async def no_consumer(url: str) -> bool:
    return await consumer_count(url, QUEUE) == 0


class BlockingHandler:
    """A handler that runs until ``release`` is set; records starts, finishes and exits."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: Collector[int] = Collector()
        self.finished: Collector[int] = Collector()
        self.ended: Collector[int] = Collector()  # finished, failed or cancelled

    async def __call__(self, event: Job) -> None:
        self.started.add(event.id)
        try:
            await self.release.wait()
            self.finished.add(event.id)
        finally:
            self.ended.add(event.id)


def closer(url: str, handler: BlockingHandler, shutdown_timeout: float = 10.0) -> Connection:
    conn = Connection(SERVICE, url, shutdown_timeout=shutdown_timeout)
    conn.event_stream_consumer("Job", Job)(handler)
    return conn


async def publish_jobs(url: str, ids: range) -> None:
    publisher = Publisher(Route(Job, "Job"))
    async with Connection("job-source", url) as source:
        await source.start(event_stream_publisher(publisher))
        await asyncio.gather(*(publisher.publish(Job(id=n)) for n in ids))


async def next_connection_gets(url: str, count: int, within: float = 10.0) -> list[int]:
    """Start the service again and return the ids its handler gets (``count`` of them, then
    nothing more for a while)."""
    got: Collector[int] = Collector()
    conn = Connection(SERVICE, url)

    @conn.event_stream_consumer("Job")
    async def on_job(event: Job) -> None:
        got.add(event.id)

    async with conn:
        await conn.start()
        await got.wait(count, within=within)
        await got.settle(0.3)
    return sorted(got.items)


async def test_close_lets_running_handlers_finish_and_acks_them(
    amqp_events_broker_url: str,
) -> None:
    handler = BlockingHandler()
    conn = closer(amqp_events_broker_url, handler)
    async with conn:
        await conn.start()
        await publish_jobs(amqp_events_broker_url, range(5))
        await handler.started.wait(5)
        closing = asyncio.create_task(conn.close())
        # close() cancels the consumer first: what is published now stays in the queue.
        await eventually(
            lambda: no_consumer(amqp_events_broker_url), within=10, what="consumer cancelled"
        )
        await publish_jobs(amqp_events_broker_url, range(99, 100))
        done, _ = await asyncio.wait({closing}, timeout=0.3)
        assert not done, "close() returned while handlers were still running"
        handler.release.set()
        await asyncio.wait_for(closing, 10)
        assert sorted(handler.finished.items) == [0, 1, 2, 3, 4]
    assert 99 not in handler.started.items, "delivered after close() began"
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 1, (
        "the 5 finished were not all acked"
    )
    assert await next_connection_gets(amqp_events_broker_url, 1) == [99]


async def test_short_shutdown_timeout_requeues_unfinished_for_the_next_connection(
    amqp_events_broker_url: str,
) -> None:
    handler = BlockingHandler()
    conn = closer(amqp_events_broker_url, handler, shutdown_timeout=0.2)
    try:
        await conn.start()
        await publish_jobs(amqp_events_broker_url, range(3))
        await handler.started.wait(3)
        began = time.monotonic()
        await asyncio.wait_for(conn.close(), 10)
        took = time.monotonic() - began
        assert 0.2 <= took < 5, f"close() took {took:.2f}s with shutdown_timeout=0.2"
        assert not handler.finished.items
        # Back in the queue, and handed to the service's next connection.
        assert await next_connection_gets(amqp_events_broker_url, 3) == [0, 1, 2]
        assert await queue_depth(amqp_events_broker_url, QUEUE) == 0
    finally:
        handler.release.set()  # let the abandoned handlers end, whatever happened
        await conn.close()
        await handler.ended.wait(len(handler.started.items))
    # An abandoned handler that was left running may finish later (its ack goes nowhere), but
    # its message was redelivered: nothing was lost.


async def test_publish_after_close_raises_publish_error(amqp_events_broker_url: str) -> None:
    publisher = Publisher(Route(Job, "Job"))
    conn = Connection("job-source", amqp_events_broker_url)
    async with conn:
        await conn.start(event_stream_publisher(publisher))
        await publisher.publish(Job(id=1))
    with pytest.raises(PublishError):
        await publisher.publish(Job(id=2))
    await conn.close()
    with pytest.raises(PublishError):
        await publisher.publish(Job(id=3))


async def test_close_twice_is_fine(amqp_events_broker_url: str) -> None:
    handler = BlockingHandler()
    handler.release.set()
    never_started = Connection("never-started", amqp_events_broker_url)
    await never_started.close()
    await never_started.close()

    conn = closer(amqp_events_broker_url, handler)
    async with conn:
        await conn.start()
        await publish_jobs(amqp_events_broker_url, range(2))
        await handler.finished.wait(2)
        await conn.close()
        await conn.close()
    await conn.close()  # and a third time, after the context manager's
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 0


async def test_a_second_close_waits_for_the_first(amqp_events_broker_url: str) -> None:
    """A close() that comes while another one waits for handlers returns only once closed:
    "await close()" must mean closed, whoever called it first (e.g. run() on SIGTERM and the
    ``async with`` exit)."""
    handler = BlockingHandler()
    conn = closer(amqp_events_broker_url, handler)
    closes: list[asyncio.Task[None]] = []
    try:
        await conn.start()
        await publish_jobs(amqp_events_broker_url, range(2))
        await handler.started.wait(2)
        closes.append(asyncio.create_task(conn.close()))
        await eventually(
            lambda: no_consumer(amqp_events_broker_url), within=10, what="consumer cancelled"
        )
        closes.append(asyncio.create_task(conn.close()))
        done, _ = await asyncio.wait({closes[1]}, timeout=0.3)
        assert not done, "the second close() returned while handlers were still running"
        handler.release.set()
        await asyncio.wait_for(asyncio.gather(*closes), 10)
        assert sorted(handler.finished.items) == [0, 1]
    finally:
        handler.release.set()
        await asyncio.wait_for(asyncio.gather(*closes, conn.close()), 10)
        await handler.ended.wait(len(handler.started.items))


async def test_no_handler_starts_after_close_returned(amqp_events_broker_url: str) -> None:
    """A message delivered just before close() is either handled before close() returns, or
    not handled by this connection at all (it goes back to the queue): never both."""
    handler = BlockingHandler()
    handler.release.set()
    conn = closer(amqp_events_broker_url, handler)
    publisher = Publisher(Route(Job, "Job"))
    async with Connection("job-source", amqp_events_broker_url) as source:
        await source.start(event_stream_publisher(publisher))
        await conn.start()
        await publisher.publish(Job(id=1))
        await conn.close()
    handled_during = list(handler.finished.items)
    await handler.started.settle(0.3)
    assert handler.started.items == handled_during, "a handler started after close() returned"
    again = await next_connection_gets(amqp_events_broker_url, 0 if handled_during else 1)
    assert sorted(handled_during + again) == [1], "lost, or handled twice"


async def test_a_handler_that_closes_its_own_connection_does_not_wait_for_itself(
    amqp_events_broker_url: str,
) -> None:
    closed = asyncio.Event()
    worker = Connection("worker", amqp_events_broker_url, shutdown_timeout=30)

    @worker.event_stream_consumer("Job")
    async def stop_everything(job: dict[str, object]) -> None:
        try:
            await worker.close()
        finally:  # on RabbitMQ the closing connection cancels its consumers' tasks
            closed.set()

    await worker.start()
    await raw_publish(amqp_events_broker_url, "events.topic.exchange", "Job", b"{}", {})
    await asyncio.wait_for(closed.wait(), 5)  # not the 30 s shutdown_timeout
    assert worker.state == "closed"
