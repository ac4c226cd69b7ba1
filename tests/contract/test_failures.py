"""Failure handling, the same on both brokers: bounded retries through delay queues, dead
letters with their reasons, handler control exceptions, bounded concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import pytest
from pydantic import BaseModel

from amqp_events import (
    Ack,
    Connection,
    Drop,
    Headers,
    Publisher,
    Reject,
    Retry,
    RetryPolicy,
    Route,
    event_stream_publisher,
    with_concurrency_limit,
    with_prefetch_limit,
    with_retry_policy,
)
from tests.helpers import Collector, drain, eventually, queue_depth, raw_publish

QUEUE = "events.topic.exchange.queue.worker"
DLQ = QUEUE + ".dlq"


class Job(BaseModel):
    id: str


publisher_routes = (Route(Job, "Job.Created"),)

T = TypeVar("T")


async def run_worker(
    amqp_events_broker_url: str,
    handler: Callable[..., Awaitable[None]],
    *publish: Job,
    policy: RetryPolicy | None = None,
    calls_expected: int,
    calls: Collector[T],
) -> None:
    publisher = Publisher(*publisher_routes)
    worker = Connection("worker", amqp_events_broker_url)
    worker.event_stream_consumer("Job.Created", retry=policy)(handler)
    async with worker, Connection("jobs", amqp_events_broker_url) as jobs:
        await worker.start()
        await jobs.start(event_stream_publisher(publisher))
        for job in publish:
            await publisher.publish(job, headers={"trace": "t-1"})
        await calls.wait(calls_expected, within=15)
        await calls.settle(0.4)


async def test_always_failing_handler_goes_to_dlq_after_its_attempts(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[float] = Collector()

    async def always_fails(job: Job) -> None:
        calls.add(time.monotonic())
        raise ValueError(f"cannot do {job.id}")

    policy = RetryPolicy(attempts=3, delays=(0.2, 0.4))
    await run_worker(
        amqp_events_broker_url,
        always_fails,
        Job(id="7"),
        policy=policy,
        calls_expected=3,
        calls=calls,
    )
    assert len(calls.items) == 3
    first, second, third = calls.items
    assert second - first >= 0.2 * 0.9  # spaced by the delays
    assert third - second >= 0.4 * 0.9
    [(body, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert body == b'{"id":"7"}'
    assert headers["amqp-events-dead-reason"] == "handler-failed"
    assert headers["amqp-events-exception-type"] == "ValueError"
    assert headers["amqp-events-exception-message"] == "cannot do 7"
    assert headers["amqp-events-attempt"] == 3
    assert headers["amqp-events-exchange"] == "events.topic.exchange"
    assert headers["amqp-events-routing-key"] == "Job.Created"
    assert headers["amqp-events-dead-queue"] == QUEUE
    assert headers["amqp-events-dead-service"] == "worker"
    assert datetime.fromisoformat(headers["amqp-events-dead-at"]).tzinfo is not None
    assert headers["service"] == "jobs"  # the original headers travel along
    assert headers["trace"] == "t-1"
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 0


async def test_handler_that_recovers_is_not_dead_lettered(amqp_events_broker_url: str) -> None:
    calls: Collector[Headers] = Collector()

    async def flaky(job: Job, headers: Headers) -> None:
        calls.add(headers)
        if len(calls.items) == 1:
            raise RuntimeError("once")

    policy = RetryPolicy(attempts=3, delays=(0.05,))
    await run_worker(
        amqp_events_broker_url, flaky, Job(id="1"), policy=policy, calls_expected=2, calls=calls
    )
    assert len(calls.items) == 2
    assert calls.items[1].service == "jobs"  # the retry still says who published it
    assert calls.items[1]["trace"] == "t-1"
    assert await drain(amqp_events_broker_url, DLQ) == []


async def test_malformed_body_goes_to_dlq_at_once(amqp_events_broker_url: str) -> None:
    calls: Collector[Job] = Collector()

    async def handle(job: Job) -> None:
        calls.add(job)

    async with Connection("worker", amqp_events_broker_url) as worker:
        worker.event_stream_consumer("Job.Created")(handle)
        await worker.start()
        await raw_publish(
            amqp_events_broker_url, "events.topic.exchange", "Job.Created", b"{oops", {}
        )
        await raw_publish(
            amqp_events_broker_url, "events.topic.exchange", "Job.Created", b'{"id":"ok"}', {}
        )
        await calls.wait(1)
    [(body, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert body == b"{oops"
    assert headers["amqp-events-dead-reason"] == "undecodable"
    assert headers["amqp-events-exception-type"] == "DecodeError"
    assert "does not decode into Job" in headers["amqp-events-exception-message"]
    assert headers["amqp-events-attempt"] == 1
    assert [j.id for j in calls.items] == ["ok"]


async def test_message_without_handler_goes_to_dlq(amqp_events_broker_url: str) -> None:
    async def handle(job: Job) -> None:
        pass

    async with Connection("worker", amqp_events_broker_url) as worker:
        worker.event_stream_consumer("Job.Created")(handle)
        await worker.start()
        await raw_publish(amqp_events_broker_url, "", QUEUE, b'{"id":"x"}', {"service": "someone"})

        async def dead_lettered() -> bool:
            return await queue_depth(amqp_events_broker_url, DLQ) == 1

        await eventually(dead_lettered)  # no handler runs, so no event tells us
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-dead-reason"] == "no-handler"
    assert "no handler for routing key" in headers["amqp-events-exception-message"]


async def test_reject_goes_straight_to_dlq(amqp_events_broker_url: str) -> None:
    calls: Collector[Job] = Collector()

    async def refuse(job: Job) -> None:
        calls.add(job)
        raise Reject("customer unknown")

    await run_worker(amqp_events_broker_url, refuse, Job(id="1"), calls_expected=1, calls=calls)
    assert len(calls.items) == 1
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-dead-reason"] == "rejected"
    assert headers["amqp-events-exception-message"] == "customer unknown"


async def test_retry_counts_as_an_attempt(amqp_events_broker_url: str) -> None:
    calls: Collector[int] = Collector()

    async def later(job: Job, headers: Headers) -> None:
        calls.add(headers.get("amqp-events-attempt", 1))
        raise Retry(delay=0.01)

    policy = RetryPolicy(attempts=2, delays=(0.05,))
    await run_worker(
        amqp_events_broker_url, later, Job(id="1"), policy=policy, calls_expected=2, calls=calls
    )
    assert calls.items == [1, 2]
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-exception-type"] == "Retry"


@pytest.mark.parametrize("control", [Ack(), Drop("not for us")])
async def test_ack_and_drop_settle_without_retry_or_dlq(
    amqp_events_broker_url: str, control: Exception
) -> None:
    calls: Collector[Job] = Collector()

    async def stop_here(job: Job) -> None:
        calls.add(job)
        raise control

    await run_worker(amqp_events_broker_url, stop_here, Job(id="1"), calls_expected=1, calls=calls)
    assert len(calls.items) == 1
    assert await drain(amqp_events_broker_url, DLQ) == []
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 0


async def test_concurrency_limit_caps_running_handlers(amqp_events_broker_url: str) -> None:
    running = 0
    peak = 0
    done: Collector[str] = Collector()

    async def slow(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        done.add(job.id)

    publisher = Publisher(*publisher_routes)
    worker = Connection("worker", amqp_events_broker_url)
    worker.event_stream_consumer("Job.Created")(slow)
    async with worker, Connection("jobs", amqp_events_broker_url) as jobs:
        await worker.start(with_prefetch_limit(50), with_concurrency_limit(3))
        await jobs.start(event_stream_publisher(publisher))
        await asyncio.gather(*(publisher.publish(Job(id=str(n))) for n in range(30)))
        await done.wait(30)
    assert peak == 3


async def test_retry_policy_for_the_whole_connection(amqp_events_broker_url: str) -> None:
    calls: Collector[int] = Collector()
    publisher = Publisher(*publisher_routes)
    worker = Connection("worker", amqp_events_broker_url)

    @worker.event_stream_consumer("Job.Created")
    async def always_fails(job: Job) -> None:
        calls.add(1)
        raise RuntimeError("no")

    async with worker, Connection("jobs", amqp_events_broker_url) as jobs:
        await worker.start(with_retry_policy(RetryPolicy(attempts=2, delays=(0.05,))))
        await jobs.start(event_stream_publisher(publisher))
        await publisher.publish(Job(id="1"))
        await calls.wait(2)
        await calls.settle(0.3)
    assert len(calls.items) == 2
    assert len(await drain(amqp_events_broker_url, DLQ)) == 1
