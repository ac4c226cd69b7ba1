"""Graceful shutdown of a real service process: SIGTERM while hundreds of handlers run.

The service is ``tests/services/slow_service.py`` in a subprocess. What is checked after it
exits: no message lost (each one is either finished and acked, or back in the queue), none acked
unfinished, and none handled twice because of the shutdown alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest

from amqp_events import Connection, Publisher, Route, event_stream_publisher
from tests.helpers import eventually, queue_depth
from tests.services.slow_service import QUEUE, ROUTING_KEY, SERVICE, Work

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 500
START_WITHIN = 30.0  # interpreter start-up, imports, connecting: slow on a loaded 2-core box
EXIT_MARGIN = 10.0  # on top of shutdown_timeout: close() itself, then interpreter exit


@dataclass
class ServiceProcess:
    """The slow service running as a subprocess, and what it printed."""

    process: asyncio.subprocess.Process
    record: Path
    stderr_path: Path
    lines: list[str] = field(default_factory=list)

    async def expect(self, wanted: str, within: float) -> None:
        """Wait until the service prints the line ``wanted``."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                while wanted not in self.lines:
                    line = await self.process.stdout.readline()
                    if not line:
                        await self.process.wait()
                        pytest.fail(
                            f"service exited ({self.process.returncode}) before printing "
                            f"{wanted!r}; stdout {self.lines}; stderr:\n{self.stderr()}"
                        )
                    self.lines.append(line.decode().strip())
        except TimeoutError:
            pytest.fail(
                f"service did not print {wanted!r} within {within}s; stdout {self.lines}; "
                f"stderr:\n{self.stderr()}"
            )

    async def terminate(self, within: float) -> float:
        """SIGTERM, then wait for the exit; return how long it took. The exit must be 0."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                await self.expect_rest()
        except TimeoutError:
            pytest.fail(f"service still running {within}s after SIGTERM:\n{self.stderr()}")
        took = time.monotonic() - started
        assert self.process.returncode == 0, (self.process.returncode, self.stderr())
        assert self.lines[-1:] == ["stopped"], self.lines
        return took

    async def expect_rest(self) -> None:
        assert self.process.stdout is not None
        rest = await self.process.stdout.read()
        self.lines.extend(line.strip() for line in rest.decode().splitlines())
        await self.process.wait()

    def finished(self) -> list[int]:
        if not self.record.exists():
            return []
        return [int(line) for line in self.record.read_text().splitlines()]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


@asynccontextmanager
async def slow_service(
    url: str, record: Path, *, count: int, sleep: float, shutdown_timeout: float
) -> AsyncIterator[ServiceProcess]:
    """Start the service and wait for its ``ready``; kill it if the test leaves it running."""
    stderr_path = record.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.services.slow_service",
            url,
            str(count),
            str(record),
            "--sleep",
            str(sleep),
            "--shutdown-timeout",
            str(shutdown_timeout),
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    service = ServiceProcess(process, record, stderr_path)
    try:
        await service.expect("ready", START_WITHIN)
        yield service
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def declare_and_publish(url: str, count: int) -> None:
    """Declare the service's queue (as the service does), then publish ``count`` Work events."""
    declare = Connection(SERVICE, url)

    @declare.event_stream_consumer(ROUTING_KEY)
    async def never_called(event: Work) -> None:  # the queue is empty while this consumes
        raise AssertionError(f"got {event} before any was published")

    async with declare:
        await declare.start()
    publisher = Publisher(Route(Work, ROUTING_KEY))
    async with Connection("work-source", url) as source:
        await source.start(event_stream_publisher(publisher))
        await asyncio.gather(*(publisher.publish(Work(id=n)) for n in range(count)))
    assert await queue_depth(url, QUEUE) == count


async def ids_in_queue(url: str, queue: str) -> list[int]:
    """Ids of every message in ``queue``, leaving them there: got unacked, then requeued."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        ids: list[int] = []
        while (message := await declared.get(no_ack=False, fail=False)) is not None:
            ids.append(int(json.loads(message.body)["id"]))
        # Closing the channel puts every unacked message back.
    assert await queue_depth(url, queue) == len(ids)
    return ids


async def handled_elsewhere(url: str, record: Path, expected: set[int]) -> list[int]:
    """Run the service again until it finished ``expected``; return what it finished."""
    async with slow_service(url, record, count=0, sleep=0.01, shutdown_timeout=10) as service:
        # Another process writes the file: no event to wait on, so poll it.
        await eventually(lambda: set(service.finished()) >= expected, within=60)
        assert await service.terminate(10 + EXIT_MARGIN) < 10 + EXIT_MARGIN
        return service.finished()


async def test_sigterm_lets_running_handlers_finish(
    amqp_events_rabbitmq_vhost_url: str, tmp_path: Path
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    await declare_and_publish(url, EVENTS)
    shutdown_timeout = 10.0
    async with slow_service(
        url, tmp_path / "first.txt", count=EVENTS, sleep=0.5, shutdown_timeout=shutdown_timeout
    ) as service:
        await service.expect(f"running {EVENTS}", 30)  # all 500 delivered and running at once
        finished_before = len(service.finished())
        took = await service.terminate(shutdown_timeout + EXIT_MARGIN)
    first = service.finished()
    left = await ids_in_queue(url, QUEUE)
    print(
        f"shutdown: {EVENTS} running at SIGTERM ({finished_before} finished before), exit after "
        f"{took:.2f}s, {len(first)} finished, {len(left)} left in the queue"
    )
    everything = set(range(EVENTS))
    assert len(first) == len(set(first)), "a handler ran twice in one run"
    assert set(first) | set(left) == everything, "lost"
    assert not set(first) & set(left), "finished, yet back in the queue: it will run twice"
    assert set(first) == everything, "a running handler did not get to finish"
    assert "still running" not in service.stderr()

    second = await handled_elsewhere(url, tmp_path / "second.txt", set(left))
    assert sorted(second) == sorted(left), "handled again after a graceful shutdown"
    assert await queue_depth(url, QUEUE) == 0


async def test_sigterm_with_short_shutdown_timeout_requeues_unfinished(
    amqp_events_rabbitmq_vhost_url: str, tmp_path: Path
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    await declare_and_publish(url, EVENTS)
    shutdown_timeout = 0.2
    async with slow_service(
        url, tmp_path / "first.txt", count=EVENTS, sleep=2.0, shutdown_timeout=shutdown_timeout
    ) as service:
        await service.expect(f"running {EVENTS}", 30)
        took = await service.terminate(shutdown_timeout + EXIT_MARGIN)
    first = service.finished()
    left = await ids_in_queue(url, QUEUE)
    print(
        f"short shutdown: exit after {took:.2f}s, {len(first)} finished, {len(left)} back in "
        "the queue"
    )
    everything = set(range(EVENTS))
    assert set(first) | set(left) == everything, "lost"
    assert not set(first) & set(left), "finished, yet back in the queue"
    assert not first, "a 2 s handler finished within a 0.2 s shutdown"
    assert "still running after 0.2s" in service.stderr()

    second = await handled_elsewhere(url, tmp_path / "second.txt", everything)
    assert sorted(second) == sorted(everything), "redelivered messages not handled exactly once"
    assert await queue_depth(url, QUEUE) == 0
