"""Every delivery is settled exactly once, whatever the handler raises and whatever shutdown,
request/response or a crashing consumer do around it; the same on both brokers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Drop,
    Publisher,
    Reject,
    RemoteError,
    RequestTimeout,
    Retry,
    RetryPolicy,
    Route,
    service_publisher,
    service_request_consumer,
    with_concurrency_limit,
    with_prefetch_limit,
    with_retry_policy,
)
from amqp_events._failures import FailureRouter
from amqp_events._transport._base import Delivery
from tests.helpers import Collector, drain, eventually, queue_depth, raw_publish

QUEUE = "events.topic.exchange.queue.worker"
DLQ = QUEUE + ".dlq"
EXCHANGE = "events.topic.exchange"
REQUESTS = "billing.direct.exchange.request.queue"


class Job(BaseModel):
    id: str


class Quote(BaseModel):
    item: str


class Price(BaseModel):
    total: int


class Fatal(BaseException):
    """A BaseException of the handler's own, not shutdown."""


async def publish_jobs(url: str, count: int) -> None:
    for i in range(count):
        await raw_publish(url, EXCHANGE, "Job.Created", f'{{"id":"{i}"}}'.encode(), {})


async def dlq_has(url: str, queue: str, count: int) -> None:
    async def arrived() -> bool:
        return await queue_depth(url, queue) >= count

    await eventually(arrived, within=15)


@pytest.mark.parametrize("raised", [asyncio.CancelledError, Fatal, GeneratorExit])
async def test_a_handler_raising_a_base_exception_settles_its_message(
    amqp_events_broker_url: str, raised: type[BaseException]
) -> None:
    calls: Collector[str] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created")
        async def breaks(job: Job) -> None:
            calls.add(job.id)
            raise raised()

        # With prefetch 1, a message left unsettled would stall every later one.
        await worker.start(with_prefetch_limit(1), with_retry_policy(RetryPolicy(attempts=1)))
        await publish_jobs(amqp_events_broker_url, 3)
        await dlq_has(amqp_events_broker_url, DLQ, 3)
        await calls.settle(0.3)
    assert sorted(calls.items) == ["0", "1", "2"]
    dead = await drain(amqp_events_broker_url, DLQ)
    assert {h["amqp-events-exception-type"] for _, h in dead} == {raised.__name__}
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 0


async def test_a_handler_cancelled_error_counts_as_an_attempt(amqp_events_broker_url: str) -> None:
    calls: Collector[str] = Collector()
    handled: Collector[str] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=RetryPolicy(attempts=2, delays=(0.05,)))
        async def flaky(job: Job) -> None:
            calls.add(job.id)
            if len(calls.items) == 1:
                # e.g. a timeout around an inner task that escaped as CancelledError
                raise asyncio.CancelledError
            handled.add(job.id)

        await worker.start()
        await publish_jobs(amqp_events_broker_url, 1)
        await handled.wait(1)
    assert calls.items == ["0", "0"]
    assert await drain(amqp_events_broker_url, DLQ) == []


async def test_an_awaited_response_never_waits_for_a_handler_slot(
    amqp_events_broker_url: str,
) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    prices: Collector[int] = Collector()

    async def quote(request: Quote) -> Price:
        return Price(total=len(request.item))

    async with (
        Connection("worker", amqp_events_broker_url) as worker,
        Connection("billing", amqp_events_broker_url) as billing,
    ):

        @worker.event_stream_consumer("Job.Created")
        async def priced(job: Job) -> None:
            # Holds the only slot while it waits for the response.
            response = await to_billing.request(Quote(item=job.id), Price, timeout=5)
            prices.add(response.total)

        await billing.start(service_request_consumer("Quote", quote))
        await worker.start(
            with_concurrency_limit(1), service_publisher("billing", to_billing, awaitable=True)
        )
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", b'{"id":"abc"}', {})
        assert await prices.wait(1) == [3]
    assert await drain(amqp_events_broker_url, DLQ) == []


async def test_close_starts_no_handler_that_was_waiting_for_a_slot(
    amqp_events_broker_url: str,
) -> None:
    started: Collector[str] = Collector()
    release = asyncio.Event()

    worker = Connection("worker", amqp_events_broker_url, shutdown_timeout=10)

    @worker.event_stream_consumer("Job.Created")
    async def slow(job: Job) -> None:
        started.add(job.id)
        await release.wait()

    await worker.start(with_concurrency_limit(1), with_prefetch_limit(5))
    await publish_jobs(amqp_events_broker_url, 3)
    await started.wait(1)
    closing = asyncio.create_task(worker.close())
    await asyncio.sleep(0.2)  # close() has begun and waits for the running handler
    release.set()
    await closing
    assert len(started.items) == 1  # the two waiting for the slot never started
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 2  # back in the queue, unhandled


async def test_a_rejecting_request_handler_answers_the_caller_at_once(
    amqp_events_broker_url: str,
) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))

    async def refuse(request: Quote) -> Price:
        raise Reject(f"{request.item} is not for sale")

    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", refuse))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        with pytest.raises(RemoteError, match="not for sale") as info:
            await to_billing.request(Quote(item="tea"), Price, timeout=10)
        assert info.value.error_type == "Reject"
    await dlq_has(amqp_events_broker_url, REQUESTS + ".dlq", 1)


async def test_a_dropping_request_handler_answers_the_caller_at_once(
    amqp_events_broker_url: str,
) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))

    async def drop(request: Quote) -> Price:
        raise Drop("duplicate")

    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", drop))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        with pytest.raises(RemoteError, match="duplicate"):
            await to_billing.request(Quote(item="tea"), Price, timeout=10)
    assert await queue_depth(amqp_events_broker_url, REQUESTS + ".dlq") == 0


async def test_a_late_response_is_rejected_and_logged_not_kept(
    amqp_events_broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    late = asyncio.Event()
    answered = asyncio.Event()

    async def slow(request: Quote) -> Price:
        await late.wait()
        answered.set()
        return Price(total=1)

    response_queue = "billing.headers.exchange.response.queue.shop"
    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", slow))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        with pytest.raises(RequestTimeout):
            await to_billing.request(Quote(item="tea"), Price, timeout=0.2)
        late.set()
        await answered.wait()

        async def gone() -> bool:
            return await queue_depth(amqp_events_broker_url, response_queue) == 0 and any(
                "nobody awaits" in r.getMessage() for r in caplog.records
            )

        await eventually(gone)
    assert await queue_depth(amqp_events_broker_url, response_queue + ".dlq") == 0


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1.0, "soon"])
async def test_a_retry_with_a_delay_that_is_no_delay_is_a_failure_like_any(
    amqp_events_broker_url: str, delay: object
) -> None:
    calls: Collector[str] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=RetryPolicy(attempts=2, delays=(0.05,)))
        async def odd(job: Job) -> None:
            calls.add(job.id)
            raise Retry(delay=delay)  # type: ignore[arg-type]  # what a careless handler does

        await worker.start()
        await publish_jobs(amqp_events_broker_url, 1)
        await dlq_has(amqp_events_broker_url, DLQ, 1)
        await calls.settle(0.3)
    assert calls.items == ["0", "0"]
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-exception-type"] == "ConfigurationError"


async def test_a_bug_in_dispatch_puts_the_message_back_instead_of_stalling(
    amqp_events_broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    handled: Collector[str] = Collector()
    original = FailureRouter.routing_key_of
    broken = [True]

    def routing_key_of_once_broken(self: FailureRouter, delivery: Delivery) -> str:
        if broken.pop() if broken else False:
            raise RuntimeError("a bug of ours")
        return original(self, delivery)

    monkeypatch.setattr(FailureRouter, "routing_key_of", routing_key_of_once_broken)
    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created")
        async def fine(job: Job) -> None:
            handled.add(job.id)

        await worker.start(with_prefetch_limit(1))
        await publish_jobs(amqp_events_broker_url, 2)
        assert sorted(await handled.wait(2)) == ["0", "1"]
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 0
