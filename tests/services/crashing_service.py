"""A service whose handler kills its own process, as an OOM kill or a segfault would.

Run from the repository root::

    python -m tests.services.crashing_service <url> <record-file> [quorum]

It consumes ``Job.Created`` on its durable queue. The handler appends the event's id to
``record-file`` (flushed), then ends the process with ``os._exit(1)``: no ack, no reject, no
close. Prints ``ready`` once it consumes. With ``quorum``, its queue is a quorum queue.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import BaseModel

from amqp_events import Connection, Setup, with_queue_options

SERVICE = "crashing-service"
ROUTING_KEY = "Job.Created"
QUEUE = f"events.topic.exchange.queue.{SERVICE}"


class Job(BaseModel):
    id: str


async def main(url: str, record: Path, *options: str) -> None:
    connection = Connection(SERVICE, url)

    @connection.event_stream_consumer(ROUTING_KEY)
    async def crash(job: Job) -> None:
        with record.open("a") as out:
            out.write(f"{job.id}\n")
        os._exit(1)

    setups: list[Setup] = [with_queue_options(quorum=True)] if "quorum" in options else []
    await connection.start(*setups)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:]))
