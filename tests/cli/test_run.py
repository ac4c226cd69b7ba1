"""``amqp-events run``: a real process serving an APP until SIGTERM; --workers share a queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

from amqp_events import Connection, Publisher, Route, event_stream_publisher

from .apps.worker import QUEUE, Job

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.apps.worker:make_worker"


def start(url: str, record: Path, *options: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "CLI_TEST_RECORD": str(record)}
    environment.pop("AMQP_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "amqp_events", "run", APP, "--url", url, *options],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def wait_for_consumers(url: str, count: int, process: subprocess.Popen[bytes]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        for _ in range(300):
            assert process.poll() is None, process.communicate()
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(QUEUE, passive=True)
                if declared.declaration_result.consumer_count == count:
                    return
            except aio_pika.exceptions.ChannelClosed:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{count} consumer(s) never came on {QUEUE}")


async def publish_jobs(url: str, ids: list[str]) -> None:
    publisher = Publisher(Route(Job, "Job.Created"))
    async with Connection("job-publisher", url) as conn:
        await conn.start(event_stream_publisher(publisher))
        for job_id in ids:
            await publisher.publish(Job(id=job_id))


def _lines(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


async def records(record: Path, count: int) -> list[tuple[str, str]]:
    return [(job, pid) for job, pid, _ in await frozen_records(record, count)]


async def frozen_records(record: Path, count: int) -> list[tuple[str, str, int]]:
    """(job id, pid, objects frozen out of the GC's reach) per handled job."""
    for _ in range(300):
        lines = await asyncio.to_thread(_lines, record)
        if len(lines) >= count:
            return [(job, pid, int(frozen)) for job, pid, frozen in map(str.split, lines)]
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {lines} handled")


async def stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(process.wait, 30)
    _, err = process.communicate()
    return code, err.decode()


async def test_serves_until_sigterm_then_exits_0(
    amqp_events_rabbitmq_vhost_url: str, tmp_path: Path
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    record = tmp_path / "handled"
    process = start(url, record)
    try:
        await wait_for_consumers(url, 1, process)
        await publish_jobs(url, ["a", "b"])
        handled = await frozen_records(record, 2)
        assert [job for job, _, _ in handled] == ["a", "b"]
        assert {pid for _, pid, _ in handled} == {str(process.pid)}
        # Start-up's objects frozen out of the cyclic GC's reach, once started.
        assert all(frozen > 10_000 for _, _, frozen in handled), handled
    finally:
        code, err = await stop(process)
    assert code == 0, err
    assert "Traceback" not in err
    assert "worker-service stopped" in err


async def test_no_gc_freeze_leaves_the_collector_alone(
    amqp_events_rabbitmq_vhost_url: str, tmp_path: Path
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    record = tmp_path / "handled"
    process = start(url, record, "--no-gc-freeze")
    try:
        await wait_for_consumers(url, 1, process)
        await publish_jobs(url, ["a"])
        [(_, _, frozen)] = await frozen_records(record, 1)
        assert frozen == 0
    finally:
        code, err = await stop(process)
    assert code == 0, err


async def test_workers_share_the_queue(amqp_events_rabbitmq_vhost_url: str, tmp_path: Path) -> None:
    url = amqp_events_rabbitmq_vhost_url
    record = tmp_path / "handled"
    process = start(url, record, "--workers", "2")
    try:
        await wait_for_consumers(url, 2, process)
        ids = [f"j{i}" for i in range(20)]
        await publish_jobs(url, ids)
        handled = await records(record, 20)
    finally:
        code, err = await stop(process)
    assert code == 0, err
    assert sorted(job for job, _ in handled) == sorted(ids)  # each once
    pids = {pid for _, pid in handled}
    assert len(pids) == 2
    assert str(process.pid) not in pids  # the parent only supervises


async def test_a_worker_that_cannot_start_fails_the_run(tmp_path: Path) -> None:
    process = start("amqp://guest:guest@127.0.0.1:1/", tmp_path / "handled", "--workers", "2")
    code = await asyncio.to_thread(process.wait, 60)
    _, err = process.communicate()
    assert code == 1
    assert "2 of 2 worker(s) failed" in err.decode()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--reload", "--workers", "2"], "--reload and --workers are exclusive"),
        (["--workers", "0"], "--workers: must be 1 or more, got 0"),
    ],
)
def test_bad_run_options(options: list[str], named: str, tmp_path: Path) -> None:
    process = start("amqp://guest:guest@127.0.0.1/", tmp_path / "handled", *options)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert named in err.decode()
