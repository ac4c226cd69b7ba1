"""A service with slow handlers, for testing graceful shutdown from outside the process.

Run from the repository root::

    python -m tests.services.slow_service <url> <count> <record-file> \\
        [--sleep 0.5] [--shutdown-timeout 30]

It consumes ``Work`` events (routing key ``Work``) on its durable queue with a prefetch of 600, so
that hundreds of handlers run at once. Each handler sleeps ``--sleep`` seconds, then appends the
event's id as one line to ``record-file`` (flushed at once), and returns, which acks the message.

On stdout, one line each, flushed: ``ready`` once it consumes, ``running <count>`` the first time
``count`` handlers run at the same time (0: never), and ``stopped`` after a graceful shutdown. It
serves with ``Connection.run()``: SIGTERM or SIGINT stops consuming, lets running handlers finish
for up to ``--shutdown-timeout`` seconds, and closes; unfinished messages go back to the queue.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel

from amqp_events import Connection, with_prefetch_limit

SERVICE = "slow-service"
ROUTING_KEY = "Work"
QUEUE = f"events.topic.exchange.queue.{SERVICE}"
PREFETCH = 600


class Work(BaseModel):
    id: int


def say(line: str) -> None:
    print(line, flush=True)


class SlowWorker:
    """The handler's state: how many run now, and the file finished ids go to."""

    def __init__(self, record: TextIO, sleep: float, announce_at: int) -> None:
        self.record = record
        self.sleep = sleep
        self.announce_at = announce_at
        self.running = 0

    async def handle(self, event: Work) -> None:
        self.running += 1
        try:
            if self.running == self.announce_at:
                say(f"running {self.running}")
                self.announce_at = 0  # once
            await asyncio.sleep(self.sleep)
            self.record.write(f"{event.id}\n")
            self.record.flush()
        finally:
            self.running -= 1


def build(url: str, worker: SlowWorker, shutdown_timeout: float = 30.0) -> Connection:
    """The service's connection with its one consumer registered (not started)."""
    conn = Connection(SERVICE, url, shutdown_timeout=shutdown_timeout)
    conn.event_stream_consumer(ROUTING_KEY, Work)(worker.handle)
    return conn


async def serve(
    url: str, count: int, record_path: Path, sleep: float, shutdown_timeout: float
) -> None:
    with record_path.open("a", encoding="utf-8") as record:
        conn = build(url, SlowWorker(record, sleep, count), shutdown_timeout=shutdown_timeout)
        # run() handles SIGTERM from before it starts the connection: once the state says
        # started, a SIGTERM can only mean a graceful close.
        serving = asyncio.create_task(conn.run(with_prefetch_limit(PREFETCH)))
        while conn.state != "started" and not serving.done():  # noqa: ASYNC110 - a probe polls too
            await asyncio.sleep(0.01)
        say("ready")
        await serving
    say("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.services.slow_service")
    parser.add_argument("url", help="broker URL, e.g. amqp://guest:guest@127.0.0.1:5672/vhost")
    parser.add_argument(
        "count", type=int, help="print 'running <count>' once that many handlers run (0: never)"
    )
    parser.add_argument("record_file", type=Path, help="finished ids are appended here")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each handler sleeps")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="Connection(shutdown_timeout=...)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.count <= PREFETCH:
        parser.error(f"count must be from 0 to the prefetch, {PREFETCH}")
    asyncio.run(serve(args.url, args.count, args.record_file, args.sleep, args.shutdown_timeout))


if __name__ == "__main__":
    main()
