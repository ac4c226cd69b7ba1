"""The service that ``python -m benchmarks.scaling`` runs as ``amqp-events run --workers N``.

``benchmarks.scaling_app:make_app`` makes one ``Connection`` with one event-stream consumer of
``Order`` on the benchmark's routing key, at the benchmark's prefetch; its handler gets the decoded
order and returns, so amqp-events acks it. The service name is ``$BENCH_SCALING_SERVICE``
(default ``bench-scaling``); the URL comes from ``run --url``.

When ``$BENCH_SCALING_DIR`` names a directory, each worker process also takes part in the
measurement, at a cost of two clock reads per message:

- at its first order it writes ``<pid>.json`` there, and its handlers wait for SIGUSR1, so that
  the clock starts once all N workers are attached (each holding a prefetch of orders), not while
  the last is still starting;
- it counts the orders it handled since, when it handled the last one (``time.monotonic_ns``: one
  clock for every process of the machine) and its own CPU time then, and writes them to
  ``<pid>.json`` every :data:`REPORT_INTERVAL` seconds and at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from amqp_events import Connection, with_prefetch_limit

from .common import PREFETCH, ROUTING_KEY, Order

__all__ = [
    "DIR_VARIABLE",
    "GO_SIGNAL",
    "REPORT_INTERVAL",
    "SERVICE_VARIABLE",
    "WorkerReport",
    "make_app",
]

SERVICE_VARIABLE = "BENCH_SCALING_SERVICE"
DIR_VARIABLE = "BENCH_SCALING_DIR"
DEFAULT_SERVICE = "bench-scaling"
GO_SIGNAL: Final = signal.SIGUSR1
REPORT_INTERVAL = 0.02


@dataclass
class WorkerReport:
    """What one worker process writes to ``<pid>.json``."""

    pid: int
    count: int = 0  # orders handled since the go signal
    go_ns: int = 0  # time.monotonic_ns() when the go signal came; 0: not yet
    go_cpu: float = 0.0  # time.process_time() then
    last_ns: int = 0  # time.monotonic_ns() when it handled its last order
    last_cpu: float = 0.0  # time.process_time() then


@dataclass
class _Worker:
    directory: Path
    report: WorkerReport
    go: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def write(self) -> None:
        path = self.directory / f"{self.report.pid}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self.report)))
        os.replace(temporary, path)  # the reader never sees half a file

    def open(self) -> None:
        """The go signal: note the time and CPU, let the handlers run, report from now on."""
        if self.go.is_set():
            return
        self.report.go_ns = time.monotonic_ns()
        self.report.go_cpu = time.process_time()
        self.go.set()
        self.task = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(REPORT_INTERVAL)


_worker: _Worker | None = None


def _this_worker() -> _Worker | None:
    """This process's measurement, begun at its first order (the CLI's parent process, which
    only loads the APP to check it, never gets one)."""
    global _worker
    if _worker is None:
        directory = os.environ.get(DIR_VARIABLE)
        if not directory:
            return None
        worker = _Worker(Path(directory), WorkerReport(pid=os.getpid()))
        asyncio.get_running_loop().add_signal_handler(GO_SIGNAL, worker.open)
        worker.write()  # here and waiting: the benchmark signals the pids it finds
        atexit.register(worker.write)
        _worker = worker
    return _worker


def make_app() -> Connection:
    """The benchmark's consuming service (the CLI's ``run --url`` gives it its URL)."""
    conn = Connection(os.environ.get(SERVICE_VARIABLE) or DEFAULT_SERVICE)
    conn.use(with_prefetch_limit(PREFETCH))

    @conn.event_stream_consumer(ROUTING_KEY, Order)
    async def on_order(event: Order) -> None:
        worker = _worker or _this_worker()
        if worker is None:
            return
        if not worker.go.is_set():
            await worker.go.wait()
        report = worker.report
        report.count += 1
        report.last_ns = time.monotonic_ns()
        report.last_cpu = time.process_time()

    return conn
