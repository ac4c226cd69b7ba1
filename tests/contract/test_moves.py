"""Retries and dead letters against hostile input and operator actions, on both brokers.

Each test is a fault that once broke the promise: a foreign header that copied every move into
other queues, a deleted DLQ or delay queue, text the wire cannot carry, hand-made reserved
headers. In each, the handler runs no more often than its policy allows and the message ends
where the README says, once.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from amqp_events import Connection, Headers, Reject, RetryPolicy, with_retry_policy
from tests.helpers import Collector, delete_queue, drain, eventually, queue_depth, raw_publish

QUEUE = "events.topic.exchange.queue.worker"
DLQ = QUEUE + ".dlq"
EXCHANGE = "events.topic.exchange"
BODY = b'{"id":"1"}'


class Job(BaseModel):
    id: str


async def settle(calls: Collector[object], count: int) -> None:
    await calls.wait(count, within=15)
    await calls.settle(0.5)


async def dlq_has(url: str, count: int) -> None:
    async def arrived() -> bool:
        try:
            return await queue_depth(url, DLQ) >= count
        except Exception:  # deleted, until it is declared again
            return False

    await eventually(arrived, within=15, what=f"{count} dead letter(s)")


@pytest.mark.parametrize("header", ["CC", "BCC"])
async def test_a_message_with_cc_is_moved_once_not_copied_to_its_cc_queues(
    amqp_events_broker_url: str, header: str
) -> None:
    calls: Collector[object] = Collector()
    policy = RetryPolicy(attempts=2, delays=(0.05,))

    async with (
        Connection("worker", amqp_events_broker_url) as worker,
        Connection("other", amqp_events_broker_url) as other,
    ):

        @worker.event_stream_consumer("Job.Created", retry=policy)
        async def fails(job: Job) -> None:
            calls.add(job)
            raise Reject("no") if len(calls.items) > 1 else RuntimeError("first")

        @other.event_stream_consumer("Nothing.Here")
        async def never(job: Job) -> None:
            raise AssertionError("not for me")

        await worker.start()
        await other.start()
        await other.close()  # its queue stays, with nobody consuming it
        other_queue = "events.topic.exchange.queue.other"
        # As goamqp's QueuePublisher sends: the event's key, the destination queues in CC.
        await raw_publish(
            amqp_events_broker_url, "", "Job.Created", BODY, {header: [QUEUE, other_queue]}
        )
        await settle(calls, 2)
    assert len(calls.items) == 2  # the first failure and its one retry, nothing more
    [(body, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert body == BODY
    assert headers["amqp-events-dead-reason"] == "rejected"
    assert "CC" not in headers
    assert "BCC" not in headers
    assert (
        len(await drain(amqp_events_broker_url, other_queue)) == 1
    )  # the original's copy, and no more


async def test_broker_x_headers_are_not_carried_into_moves(amqp_events_broker_url: str) -> None:
    calls: Collector[object] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=RetryPolicy(attempts=1))
        async def fails(job: Job) -> None:
            calls.add(job)
            raise RuntimeError("no")

        await worker.start()
        headers = {"x-death": [{"queue": "elsewhere", "count": 9}], "x-first-death-queue": "q"}
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, headers)
        await settle(calls, 1)
    [(_, dead)] = await drain(amqp_events_broker_url, DLQ)
    assert not [name for name in dead if name.startswith("x-first") or name == "x-death"]


async def test_a_deleted_dlq_is_declared_again_and_gets_the_message(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[object] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created")
        async def rejects(job: Job) -> None:
            calls.add(job)
            raise Reject("not wanted")

        await worker.start()
        await delete_queue(amqp_events_broker_url, DLQ)
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, {})
        await dlq_has(amqp_events_broker_url, 1)
        await calls.settle(0.5)
    assert len(calls.items) == 1
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-dead-reason"] == "rejected"


async def test_a_deleted_delay_queue_is_declared_again_and_retries_stay_bounded(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[object] = Collector()
    policy = RetryPolicy(attempts=3, delays=(0.1,))

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=policy)
        async def fails(job: Job) -> None:
            calls.add(job)
            raise RuntimeError("always")

        await worker.start()
        await delete_queue(amqp_events_broker_url, QUEUE + ".retry.100")
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, {})
        await dlq_has(amqp_events_broker_url, 1)
        await calls.settle(0.5)
    assert len(calls.items) == 3
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-attempt"] == 3


async def test_exception_text_the_wire_cannot_carry_still_dead_letters_once(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[object] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=RetryPolicy(attempts=1))
        async def fails(job: Job) -> None:
            calls.add(job)
            raise ValueError("bad \udcff surrogate " + "é" * 5000)

        await worker.start()
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, {})
        await dlq_has(amqp_events_broker_url, 1)
        await calls.settle(0.5)
    assert len(calls.items) == 1
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    message = headers["amqp-events-exception-message"]
    assert message.startswith("bad ")
    assert len(message.encode()) <= 1000


async def test_a_foreign_header_that_is_not_utf8_still_dead_letters_once(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[object] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=RetryPolicy(attempts=2, delays=(0.05,)))
        async def fails(job: Job, headers: Headers) -> None:
            calls.add(headers["legacy"])
            raise RuntimeError("no")

        await worker.start()
        await raw_publish(
            amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, {"legacy": b"caf\xe9"}
        )
        await dlq_has(amqp_events_broker_url, 1)
        await calls.settle(0.5)
    assert len(calls.items) == 2
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert bytes(headers["legacy"]) == b"caf\xe9"  # carried byte for byte


@pytest.mark.parametrize(
    "reserved",
    [
        {"amqp-events-attempt": "3"},
        {"amqp-events-attempt": 2**40},
        {"amqp-events-attempt": True},
        {"amqp-events-routing-key": 5},
        {"amqp-events-routing-key": ""},
        {"amqp-events-redeliveries": "many"},
        {"amqp-events-exchange": ["not", "a", "name"]},
        {"amqp-events-routing-key": "Job.Created", "amqp-events-attempt": "3"},
    ],
)
async def test_malformed_reserved_headers_do_not_stop_dispatch(
    amqp_events_broker_url: str, reserved: dict[str, object]
) -> None:
    calls: Collector[object] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:

        @worker.event_stream_consumer("Job.Created", retry=RetryPolicy(attempts=2, delays=(0.05,)))
        async def fails(job: Job) -> None:
            calls.add(job)
            raise RuntimeError("no")

        await worker.start()
        # As the management UI's "publish message" sends them: to the event's key, and to the
        # queue's own name (the way retries come back).
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, reserved)
        await raw_publish(amqp_events_broker_url, "", QUEUE, BODY, reserved)
        await dlq_has(amqp_events_broker_url, 2)
        await calls.settle(0.5)
    dead = await drain(amqp_events_broker_url, DLQ)
    reasons = sorted(h["amqp-events-dead-reason"] for _, h in dead)
    if reserved.get("amqp-events-routing-key") == "Job.Created":
        # Both reach the handler; the bad attempt count counts as the first attempt.
        assert reasons == ["handler-failed", "handler-failed"]
        assert len(calls.items) == 4
    else:
        # The one sent to the queue's name names no event key we can use: no handler.
        assert reasons == ["handler-failed", "no-handler"]
        assert len(calls.items) == 2
    assert [
        h["amqp-events-attempt"] for _, h in dead if h["amqp-events-dead-reason"] != "no-handler"
    ] == [2] * (len(calls.items) // 2)
    assert await queue_depth(amqp_events_broker_url, QUEUE) == 0


async def test_a_dead_letter_fits_the_frame_even_when_the_original_nearly_filled_it(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[object] = Collector()

    async with Connection("worker", amqp_events_broker_url) as worker:
        worker_setup = with_retry_policy(RetryPolicy(attempts=1))

        @worker.event_stream_consumer("Job.Created")
        async def fails(job: Job) -> None:
            calls.add(job)
            raise RuntimeError("x" * 5000)

        await worker.start(worker_setup)
        big = {"blob": "b" * 130_600}  # with our diagnostics this would exceed frame_max
        await raw_publish(amqp_events_broker_url, EXCHANGE, "Job.Created", BODY, big)
        await dlq_has(amqp_events_broker_url, 1)
        await calls.settle(0.5)
    assert len(calls.items) == 1
    [(_, headers)] = await drain(amqp_events_broker_url, DLQ)
    assert headers["amqp-events-dead-reason"] == "handler-failed"
    assert "blob" not in headers
    assert headers["amqp-events-dropped-headers"] == ["blob"]
