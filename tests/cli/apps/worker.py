"""A service for ``amqp-events run``'s tests: each handled job's id, the handling process's
pid and how many objects it has frozen out of the cyclic GC's reach are appended to the file
``CLI_TEST_RECORD`` names."""

from __future__ import annotations

import asyncio
import gc
import os

from pydantic import BaseModel

from amqp_events import Connection, with_prefetch_limit

SERVICE = "worker-service"
QUEUE = f"events.topic.exchange.queue.{SERVICE}"


class Job(BaseModel):
    id: str


def _record(job_id: str) -> None:
    with open(os.environ["CLI_TEST_RECORD"], "a") as record:
        record.write(f"{job_id} {os.getpid()} {gc.get_freeze_count()}\n")


def make_worker() -> Connection:
    conn = Connection(SERVICE)
    conn.use(with_prefetch_limit(1))

    @conn.event_stream_consumer("Job.Created")
    async def on_job(job: Job) -> None:
        await asyncio.sleep(0.02)
        _record(job.id)

    return conn
