"""The redelivery bound on both brokers: a consumer that dies without settling (here its
connection is cut from the handler, as a process kill would cut it) gets the message back at
most ``max_redeliveries`` times; then it is dead-lettered with reason ``redelivered``.
``tests/rabbitmq/test_crashing_handler.py`` kills real processes."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from amqp_events import Connection, RetryPolicy
from amqp_events._transport.memory import broker_for_url
from tests.helpers import Collector, drain, eventually, queue_depth, raw_publish

QUEUE = "events.topic.exchange.queue.worker"


class Job(BaseModel):
    id: str


async def cut_own_connection(url: str, service: str) -> None:
    """What the broker sees when a consumer's process dies: its connection is gone."""
    if url.startswith("memory:"):
        broker_for_url(url).close_all_connections("consumer died")
        return
    from tests.broker_control import close_vhost_connections, vhost_of

    await close_vhost_connections(vhost_of(url), client=service, reason="consumer died")


async def test_a_consumer_that_dies_mid_handler_is_bounded(amqp_events_broker_url: str) -> None:
    calls: Collector[str] = Collector()
    policy = RetryPolicy(max_redeliveries=2)

    # The dead consumers' handlers never return: close() cancels them after a second.
    async with Connection("worker", amqp_events_broker_url, shutdown_timeout=1.0) as worker:

        @worker.event_stream_consumer("Job.Created", retry=policy)
        async def dies(job: Job) -> None:
            calls.add(job.id)
            await cut_own_connection(amqp_events_broker_url, "worker")
            await asyncio.Event().wait()  # never settles; the broker requeues it

        await worker.start()
        await raw_publish(
            amqp_events_broker_url, "events.topic.exchange", "Job.Created", b'{"id":"p"}', {}
        )

        async def dead_lettered() -> bool:
            return await queue_depth(amqp_events_broker_url, QUEUE + ".dlq") == 1

        await eventually(dead_lettered, within=30)
        await calls.settle(0.5)
    assert calls.items == ["p"] * 3  # the first delivery and 2 redeliveries
    [(_, headers)] = await drain(amqp_events_broker_url, QUEUE + ".dlq")
    assert headers["amqp-events-dead-reason"] == "redelivered"
