"""A handler that kills its process gets its message redelivered, not forever: after
``max_redeliveries`` (default 5) the message goes to the DLQ with reason ``redelivered``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from amqp_events import Connection, with_queue_options
from tests.helpers import drain, queue_depth, raw_publish
from tests.services.crashing_service import QUEUE, ROUTING_KEY, SERVICE

MAX_REDELIVERIES = 5  # RetryPolicy's default


async def run_until_it_dies(url: str, record: Path, *options: str) -> bool:
    """Start the service; True if its handler killed it, False if it idled (nothing to do)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.services.crashing_service",
        url,
        str(record),
        *options,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(process.wait(), timeout=4)
    except TimeoutError:
        process.kill()
        await process.wait()
        return False
    return True


@pytest.mark.parametrize("kind", ["classic", "quorum"])
async def test_a_handler_that_kills_its_process_ends_in_the_dlq(
    amqp_events_rabbitmq_vhost_url: str, tmp_path: Path, kind: str
) -> None:
    options = ("quorum",) if kind == "quorum" else ()
    url = amqp_events_rabbitmq_vhost_url
    record = tmp_path / "calls.txt"
    # Declare the service's queues once, then publish the poison message.
    async with Connection(SERVICE, url) as setup:

        @setup.event_stream_consumer(ROUTING_KEY)
        async def unused(event: dict[str, object]) -> None:
            raise AssertionError("the setup connection closes before any delivery")

        await setup.start(*([with_queue_options(quorum=True)] if options else []))
        await setup.close()
    await raw_publish(url, "events.topic.exchange", ROUTING_KEY, b'{"id":"poison"}', {})

    deaths = 0
    for _ in range(MAX_REDELIVERIES + 3):
        if not await run_until_it_dies(url, record, *options):
            break
        deaths += 1
    calls = record.read_text().split()
    assert calls == ["poison"] * (MAX_REDELIVERIES + 1)  # the first delivery and 5 redeliveries
    assert deaths == MAX_REDELIVERIES + 1
    [(body, headers)] = await drain(url, QUEUE + ".dlq")
    assert body == b'{"id":"poison"}'
    assert headers["amqp-events-dead-reason"] == "redelivered"
    assert headers["amqp-events-redeliveries"] == MAX_REDELIVERIES + 1
    assert await queue_depth(url, QUEUE) == 0
