"""``python -m benchmarks.scaling``: consume throughput of one queue with 1, 2, 4 ... processes.

Each measurement fills a fresh service queue with ``--messages`` orders published by amqp-events
(``Publisher.publish_many``, so the workers decode what a real service gets), then starts
``amqp-events run benchmarks.scaling_app:make_app --workers N``. Once the broker reports N
consumers on the queue and each worker holds its prefetch of orders, waiting, the clock starts
and a signal lets them go; it stops at the last order handled. The workers count what they
handle and note the time and their CPU then (see :mod:`benchmarks.scaling_app`), so the count is
exact and start-up is left out; afterwards the queue must be empty (handled was also acked).

Beside msg/s, the table shows where the CPU went during the timed section: the workers' own CPU,
the broker's (the local ``beam.smp``, from /proc; skipped with a note when not visible) and the
machine's (every process, from /proc/stat: other processes on a shared machine count too). From
those, each row says what limited it:

- client: each worker process used (nearly) a core of its own;
- machine: every core of the machine was busy, whoever used it;
- broker: RabbitMQ used (nearly) a core while the workers had CPU to spare; one classic queue is
  one Erlang process, so one queue cannot use more than about one core of the broker;
- none: nothing was saturated (waiting on round trips: prefetch, acks).

The broker is ``--url``, else ``AMQP_URL``, else RabbitMQ on 127.0.0.1:5672; the benchmark works in
a vhost of its own, as ``python -m benchmarks`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aio_pika

from amqp_events import ConfigurationError, Connection, Publisher, Route, event_stream_publisher
from amqp_events._url import redact
from amqp_events.testing._urls import amqp_target, is_loopback

from .broker import BenchBroker
from .common import PREFETCH, ROUTING_KEY, Order, Sample, make_order, queue_name, wait_timeout
from .report import _fmt, _median, _no_nan, _table, _version
from .scaling_app import (
    DIR_VARIABLE,
    GO_SIGNAL,
    REPORT_INTERVAL,
    SERVICE_VARIABLE,
    WorkerReport,
)

__all__ = [
    "ScalingOptions",
    "ScalingReport",
    "ScalingRow",
    "explain",
    "main",
    "render",
    "run_scaling",
    "summarize",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[1]  # the run's cwd, so that ``benchmarks`` imports
APP = "benchmarks.scaling_app:make_app"
PUBLISHER_SERVICE = "bench-scaling-publisher"
ATTACH_TIMEOUT = 60.0  # seconds for the workers to start and attach, on a busy machine
STOP_TIMEOUT = 40.0  # the run's graceful close (a worker's shutdown_timeout is 30 s)
# What counts as saturated (cores in use over the timed section).
CLIENT_BUSY = 0.85  # of a core, per worker
BROKER_BUSY = 0.85  # of a core: the queue's Erlang process is one
MACHINE_BUSY = 0.90  # of every core


@dataclasses.dataclass
class ScalingOptions:
    workers: tuple[int, ...] = (1, 2, 4)
    messages: int = 40_000  # per run
    runs: int = 3
    url: str | None = None  # None: AMQP_URL, else the local broker
    lock: str | None = None  # flock this file around each measurement


@dataclasses.dataclass
class ScalingReport:
    options: ScalingOptions
    samples: dict[int, list[Sample]]  # by worker count
    errors: dict[int, list[str]]
    notes: list[str]
    cores: int
    seconds: float


# -- CPU readings ---------------------------------------------------------------------------


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _beam_pid() -> int | None:
    """The local RabbitMQ's Erlang VM (``beam.smp``), if exactly one is visible in /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "beam.smp":
                found.append(int(entry.name))
    return found[0] if len(found) == 1 else None


def _process_cpu(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def _machine_busy() -> float:
    """CPU seconds spent busy by every core since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _clock_ticks()


@dataclasses.dataclass(frozen=True)
class CpuReading:
    at: float  # time.monotonic()
    broker: float  # beam.smp's CPU seconds; NaN when not readable
    machine: float  # every core's busy seconds; NaN when not readable


class CpuMeter:
    """Reads the broker's and the machine's CPU; says once, in ``notes``, what it cannot read."""

    def __init__(self, url: str, notes: list[str]) -> None:
        self._pid: int | None = None
        reason = _not_local(url)
        if reason is None:
            self._pid = _beam_pid()
            if self._pid is None:
                reason = "no single beam.smp process visible in /proc"
        if self._pid is not None:
            try:
                _process_cpu(self._pid)
            except (OSError, ValueError, IndexError) as exc:
                reason, self._pid = f"/proc/{self._pid}/stat not readable ({exc})", None
        if reason is not None:
            notes.append(f"broker CPU not measured: {reason}")
        self._machine = Path("/proc/stat").exists()
        if not self._machine:
            notes.append("machine CPU not measured: no /proc/stat")

    def read(self) -> CpuReading:
        broker = machine = math.nan
        if self._pid is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                broker = _process_cpu(self._pid)
        if self._machine:
            machine = _machine_busy()
        return CpuReading(time.monotonic(), broker, machine)


def _not_local(url: str) -> str | None:
    """Why the broker of ``url`` is not this machine's, or None if it is."""
    try:
        host = amqp_target(url).host
    except ConfigurationError:
        return "the broker URL names several hosts"
    return None if is_loopback(host) else f"the broker ({host}) is not on this machine"


# -- one measurement ------------------------------------------------------------------------


async def _prefill(url: str, messages: int) -> None:
    """``messages`` orders into the benchmark's exchange, confirmed, as a service sends them."""
    publisher = Publisher(Route(Order, ROUTING_KEY))
    async with Connection(PUBLISHER_SERVICE, url) as conn:
        await conn.start(event_stream_publisher(publisher))
        await publisher.publish_many(make_order(i) for i in range(messages))


def _start_workers(
    url: str, service: str, workers: int, directory: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    environment = {**os.environ, SERVICE_VARIABLE: service, DIR_VARIABLE: str(directory)}
    environment.pop("AMQP_URL", None)  # --url is the one
    command = [sys.executable, "-m", "amqp_events", "run", APP, "--url", url]
    command += ["--workers", str(workers), "--log-level", "warning"]
    # A session of its own: if it hangs, its whole group (the workers too) can be killed.
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _check_running(process: subprocess.Popen[bytes], log: Path) -> None:
    code = process.poll()
    if code is not None:
        raise RuntimeError(f"amqp-events run exited with {code}:\n{_tail(log)}")


async def _wait_attached(
    url: str, queue: str, workers: int, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Until the broker reports ``workers`` consumers on ``queue``."""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        while True:
            _check_running(process, log)
            declared = await channel.declare_queue(queue, passive=True)
            if (declared.declaration_result.consumer_count or 0) >= workers:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} consumer(s) not attached after {ATTACH_TIMEOUT} s")
            await asyncio.sleep(0.05)


def _reports(directory: Path) -> list[WorkerReport]:
    return [WorkerReport(**json.loads(p.read_text())) for p in directory.glob("*.json")]


async def _wait_holding(
    directory: Path, workers: int, process: subprocess.Popen[bytes], log: Path
) -> list[int]:
    """The pids of the ``workers`` processes, once each got orders and waits for the signal."""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while True:
        pids = [r.pid for r in _reports(directory)]
        if len(pids) >= workers:
            return pids
        _check_running(process, log)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pids)} of {workers} worker(s) got orders")
        await asyncio.sleep(REPORT_INTERVAL)


async def _wait_handled(
    directory: Path, messages: int, process: subprocess.Popen[bytes], log: Path
) -> list[WorkerReport]:
    """The workers' reports once they handled ``messages`` between them, or at the timeout."""
    deadline = time.monotonic() + wait_timeout(messages)
    while True:
        reports = _reports(directory)
        if sum(r.count for r in reports) >= messages or time.monotonic() > deadline:
            return reports
        _check_running(process, log)
        await asyncio.sleep(REPORT_INTERVAL)


async def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM to the run (it forwards it to the workers), then wait for its graceful close."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        raise RuntimeError(
            f"amqp-events run did not stop in {STOP_TIMEOUT} s:\n{_tail(log)}"
        ) from None
    if code != 0:
        raise RuntimeError(f"amqp-events run exited with {code}:\n{_tail(log)}")


@contextlib.contextmanager
def _killed_on_error(process: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise


async def _timed(
    url: str,
    queue: str,
    *,
    workers: int,
    messages: int,
    service: str,
    directory: Path,
    meter: CpuMeter,
) -> Sample:
    """Start the workers on the filled queue, time them through it, stop them, count."""
    log_path = directory / "run.log"
    with log_path.open("wb") as log:
        process = _start_workers(url, service, workers, directory, log)
    with _killed_on_error(process):
        await _wait_attached(url, queue, workers, process, log_path)
        pids = await _wait_holding(directory, workers, process, log_path)
        before = meter.read()
        go_ns = time.monotonic_ns()
        for pid in pids:
            os.kill(pid, GO_SIGNAL)
        at_end = await _wait_handled(directory, messages, process, log_path)
        after = meter.read()
        await _stop(process, log_path)
    final = _reports(directory)  # written at exit: anything handled after at_end counts too
    handled = [r for r in at_end if r.count]
    wall = (max(r.last_ns for r in handled) - go_ns) / 1e9 if handled else after.at - before.at
    return Sample(
        messages=messages,
        received=sum(r.count for r in final),  # checked against the queue by the caller
        wall=wall,
        cpu=sum(r.last_cpu - r.go_cpu for r in handled),
        extra={
            "window": after.at - before.at,
            "broker_cpu": after.broker - before.broker,
            "machine_cpu": after.machine - before.machine,
            "workers_reporting": len(handled),
        },
    )


async def measure(
    broker: BenchBroker, workers: int, messages: int, meter: CpuMeter, service: str
) -> Sample:
    """One measurement, from a fresh queue to its deletion."""
    queue = queue_name(service)
    try:
        await broker.prepare_queue(queue)
        await _prefill(broker.url, messages)
        filled = await broker.depth(queue)
        if filled != messages:
            raise RuntimeError(f"queue holds {filled} orders after publishing {messages}")
        with tempfile.TemporaryDirectory(prefix="amqp-events-scaling-") as directory:
            sample = await _timed(
                broker.url,
                queue,
                workers=workers,
                messages=messages,
                service=service,
                directory=Path(directory),
                meter=meter,
            )
        # All connections are closed: anything handled but not acked is back in the queue.
        left = await broker.depth(queue)
        handled = sample.received
        sample.received = min(handled, messages - left)
        sample.duplicates = max(handled - (messages - left), 0)
        sample.extra["left_in_queue"] = left
        return sample
    finally:
        await broker.delete_queue(queue)


async def run_scaling(
    options: ScalingOptions, progress: Callable[[str], None] = lambda line: None
) -> ScalingReport:
    """Every worker count ``options.runs`` times, interleaved and rotated as the runner does."""
    started = time.perf_counter()
    notes: list[str] = []
    samples: dict[int, list[Sample]] = {k: [] for k in options.workers}
    errors: dict[int, list[str]] = {k: [] for k in options.workers}
    counts = list(options.workers)
    broker = BenchBroker(options.url, options.lock)
    meter = CpuMeter(broker.url, notes)
    broker.open()
    try:
        for run in range(1, options.runs + 1):
            shift = (run - 1) % len(counts)
            for workers in [*counts[shift:], *counts[:shift]]:
                service = f"bench-scaling-{workers}w-{run}-{uuid.uuid4().hex[:6]}"
                try:
                    with broker.lock():
                        sample = await measure(broker, workers, options.messages, meter, service)
                except Exception as exc:
                    errors[workers].append(f"run {run}: {type(exc).__name__}: {exc}")
                    progress(f"{workers} worker(s) run {run}: FAILED {exc!r}")
                    continue
                samples[workers].append(sample)
                progress(
                    f"{workers} worker(s) run {run}/{options.runs}: {sample.rate:,.0f} msg/s, "
                    f"{sample.cpu_us:,.0f} µs worker CPU/msg, "
                    f"{sample.received}/{sample.messages} received"
                )
    finally:
        broker.close()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ScalingReport(
        options=options,
        samples=samples,
        errors=errors,
        notes=notes,
        cores=cores or 1,
        seconds=time.perf_counter() - started,
    )


# -- summary, verdict, table ----------------------------------------------------------------


@dataclasses.dataclass
class ScalingRow:
    """One worker count: medians over its runs."""

    workers: int
    runs: int
    rate: float  # msg/s
    speedup: float  # against the first worker count (1, normally)
    worker_us: float  # the workers' CPU per message, summed over them
    broker_us: float  # the broker's CPU per message
    worker_cores: float  # cores the workers used between them, over the timed section
    broker_cores: float
    machine_cores: float  # cores busy on the machine, every process
    received: int  # summed over runs
    expected: int
    duplicates: int
    limit: str = "-"
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def other_cores(self) -> float:
        """Cores busy neither with the workers nor with the broker (others on the machine)."""
        return self.machine_cores - self.worker_cores - self.broker_cores

    @property
    def complete(self) -> bool:
        return not self.errors and self.received == self.expected and not self.duplicates


def _per(samples: list[Sample], value: Callable[[Sample], float]) -> float:
    return _median([value(s) for s in samples])


def _row(workers: int, samples: list[Sample], errors: list[str]) -> ScalingRow:
    return ScalingRow(
        workers=workers,
        runs=len(samples),
        rate=_per(samples, lambda s: s.received / s.wall if s.wall > 0 else math.nan),
        speedup=math.nan,
        worker_us=_per(samples, lambda s: s.cpu / s.received * 1e6 if s.received else math.nan),
        broker_us=_per(
            samples, lambda s: s.extra["broker_cpu"] / s.received * 1e6 if s.received else math.nan
        ),
        worker_cores=_per(samples, lambda s: s.cpu / s.wall if s.wall > 0 else math.nan),
        broker_cores=_per(samples, lambda s: s.extra["broker_cpu"] / s.extra["window"]),
        machine_cores=_per(samples, lambda s: s.extra["machine_cpu"] / s.extra["window"]),
        received=sum(s.received for s in samples),
        expected=sum(s.messages for s in samples),
        duplicates=sum(s.duplicates for s in samples),
        errors=list(errors),
    )


def limit_of(row: ScalingRow, cores: int) -> str:
    """What saturated first, by the thresholds above; NaN readings never match."""
    if row.worker_cores / row.workers >= CLIENT_BUSY:
        return "client"
    if row.machine_cores >= MACHINE_BUSY * cores:
        return "machine"
    if row.broker_cores >= BROKER_BUSY:
        return "broker"
    return "none"


def summarize(report: ScalingReport) -> list[ScalingRow]:
    rows = [_row(k, report.samples[k], report.errors[k]) for k in report.options.workers]
    base = rows[0].rate if rows else math.nan
    for row in rows:
        row.speedup = row.rate / base if base > 0 else math.nan
        if row.runs:
            row.limit = limit_of(row, report.cores)
    return rows


def _cores(value: float) -> str:
    return _fmt(value, ".2f")


def _why(row: ScalingRow, cores: int) -> str:
    n = f"{row.workers} worker{'s' if row.workers > 1 else ''}"
    spent = (
        f"workers {_cores(row.worker_cores)}, broker {_cores(row.broker_cores)}, "
        f"others {_cores(row.other_cores)} core(s)"
    )
    if row.limit == "client":
        also = (
            f", and the machine {row.machine_cores / cores:.0%} busy"
            if row.machine_cores >= MACHINE_BUSY * cores
            else ""
        )
        return (
            f"{n}: client-bound, each worker busy {row.worker_cores / row.workers:.0%} of a core"
            f"{also} ({row.worker_us:,.0f} µs of worker CPU per message; {spent})"
        )
    if row.limit == "machine":
        return (
            f"{n}: machine-bound, {row.machine_cores / cores:.0%} of the {cores} cores busy "
            f"({spent})"
        )
    if row.limit == "broker":
        return (
            f"{n}: broker-bound, RabbitMQ busy {_cores(row.broker_cores)} core(s) while the "
            f"workers had CPU to spare ({spent}); one classic queue is one Erlang process"
        )
    return f"{n}: nothing saturated ({spent}): round trips (prefetch {PREFETCH}, acks) limit it"


def explain(rows: list[ScalingRow], cores: int) -> str:
    """The "what limits it" paragraph, from the measured rows."""
    measured = [r for r in rows if r.runs]
    if not measured:
        return "What limits it: nothing was measured."
    base, best = measured[0], max(measured, key=lambda r: r.rate)
    parts = [
        f"What limits it: {best.workers} worker(s) consumed {best.rate:,.0f} msg/s, "
        f"{best.speedup:.2f}× the {base.rate:,.0f} msg/s of {base.workers}."
    ]
    parts += [_why(r, cores) + "." for r in measured]
    per_message = best.worker_us + best.broker_us
    if per_message > 0:
        ceiling = cores * 1e6 / per_message
        parts.append(
            f"At {best.worker_us:,.0f} µs of worker CPU and {best.broker_us:,.0f} µs of broker "
            f"CPU per message, {cores} core(s) cannot go past about {ceiling:,.0f} msg/s however "
            "many workers run: more workers help only while cores are free."
        )
    return " ".join(parts)


def _received(row: ScalingRow) -> str:
    text = f"{row.received}/{row.expected}"
    if row.duplicates:
        text += f" (+{row.duplicates} dup)"
    if row.errors:
        text += f" ({len(row.errors)} failed)"
    return text


def render(report: ScalingReport, rows: list[ScalingRow]) -> str:
    o = report.options
    out = [
        f"Consume scaling: one queue, {o.messages:,} messages per run, median of {o.runs} "
        f"run(s), prefetch {PREFETCH} per worker, `amqp-events run --workers N`; "
        f"{report.cores} CPU core(s) here. Cores = CPU seconds per second over the timed "
        "section (machine: every process, others on a shared machine too)."
    ]
    header = [
        "workers",
        "limit",
        "msg/s",
        f"×{rows[0].workers if rows else 1}",
        "worker µs/msg",
        "broker µs/msg",
        "worker cores",
        "broker cores",
        "machine cores",
        "received",
    ]
    table = [
        [
            str(r.workers),
            r.limit,
            _fmt(r.rate, ",.0f"),
            _fmt(r.speedup, ".2f"),
            _fmt(r.worker_us, ",.1f"),
            _fmt(r.broker_us, ",.1f"),
            _cores(r.worker_cores),
            _cores(r.broker_cores),
            f"{_cores(r.machine_cores)}/{report.cores}",
            _received(r),
        ]
        for r in rows
    ]
    out += _table(header, table)
    for row in rows:
        out += [f"{row.workers} worker(s): {error}" for error in row.errors]
    out += ["", explain(rows, report.cores), "", *report.notes, f"took {report.seconds:,.0f} s"]
    return "\n".join(out)


def _sample_json(sample: Sample) -> dict[str, Any]:
    data = dataclasses.asdict(sample)
    del data["latencies_ms"], data["series"]  # not used here
    return {**data, "rate": sample.rate, "cpu_us": sample.cpu_us}


def write_json(report: ScalingReport, rows: list[ScalingRow], path: Path) -> None:
    data: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            **dataclasses.asdict(report.options),
            "url": redact(report.options.url) if report.options.url else None,
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cores": report.cores,
            "packages": {p: _version(p) for p in ("amqp-events", "aio-pika", "pydantic")},
        },
        "notes": report.notes,
        "seconds": report.seconds,
        "explanation": explain(rows, report.cores),
        "results": [
            {
                **dataclasses.asdict(row),
                "complete": row.complete,
                "samples": [_sample_json(s) for s in report.samples[row.workers]],
            }
            for row in rows
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(data), indent=2, ensure_ascii=False) + "\n")


# -- command line ---------------------------------------------------------------------------


def _worker_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or any(k < 1 for k in counts) or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"distinct positive counts, e.g. 1,2,4; got {text!r}")
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
    )
    defaults = ScalingOptions()
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=defaults.workers,
        metavar="N,N,...",
        help="worker process counts, the first the speed-up's base (1,2,4)",
    )
    parser.add_argument(
        "--messages", type=_positive, default=defaults.messages, metavar="N", help="per run"
    )
    parser.add_argument(
        "--runs", type=_positive, default=defaults.runs, metavar="K", help="runs per count, median"
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="results file (benchmarks/results/scaling-<UTC time>.json)",
    )
    parser.add_argument("--url", help="broker URL (AMQP_URL, else amqp://guest:guest@127.0.0.1/)")
    parser.add_argument(
        "--lock",
        metavar="PATH",
        help="hold flock(PATH) around each measurement, for a broker shared with others",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.messages < max(args.workers) * PREFETCH:
        # Fewer, and a worker may get no order before the start: the benchmark would wait for it.
        parser.error(
            f"--messages must be at least {max(args.workers) * PREFETCH} (prefetch × workers)"
        )
    options = ScalingOptions(
        workers=args.workers, messages=args.messages, runs=args.runs, url=args.url, lock=args.lock
    )
    path = args.json or Path(
        "benchmarks", "results", datetime.now(UTC).strftime("scaling-%Y%m%dT%H%M%SZ") + ".json"
    )
    report = asyncio.run(run_scaling(options, progress=lambda line: print(line, file=sys.stderr)))
    rows = summarize(report)
    print(render(report, rows))
    write_json(report, rows, path)
    print(f"results: {path}")
    return 0 if all(r.complete for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
