"""Runs the selected workloads with the selected clients against one broker, in one vhost.

Runs are interleaved (run 1 of every client, then run 2, ...) and the clients' order rotates from
run to run, so that a drift of the shared machine or of the broker's state spreads over all
clients instead of penalising the one that always goes first or last.
"""

from __future__ import annotations

import gc
import importlib
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .broker import BenchBroker
from .client import Client
from .common import PIPELINE_WINDOW, WARMUP, Sample, queue_name
from .memory import measure_memory

__all__ = [
    "BASELINE",
    "CLIENT_MODULES",
    "REFERENCE",
    "WORKLOADS",
    "Options",
    "Report",
    "Result",
    "run_benchmarks",
    "select",
]

WORKLOADS = (
    "publish-sequential",
    "publish-pipelined",
    "publish-many",
    "outbox-relay",
    "consume",
    "latency",
    "memory",
)
# Client name -> module with its CLIENT, in the tables' order. A module may also have
# unavailable() -> str | None: why the client cannot run here (the benchmark skips it, noted).
CLIENT_MODULES = {
    "go-amqp091": "benchmarks.workloads_go",
    "go-enveloped": "benchmarks.workloads_go_enveloped",  # the same messages as ours
    "aio-pika": "benchmarks.workloads_raw",
    "amqp-events": "benchmarks.workloads_events",
    "faststream": "benchmarks.workloads_faststream",
}
BASELINE = "aio-pika"  # the ×raw ratios
REFERENCE = "go-amqp091"  # the ×go ratios, when Go is there
# The memory workload is amqp-events' alone: it asks whether the library leaks.
MEMORY_CLIENT = "amqp-events"
# So is the outbox relay's (the ``outbox`` extra; benchmarks.workloads_outbox), and
# publish_many's (a batch with no task per event: the API has no counterpart elsewhere).
OUTBOX_CLIENT = "amqp-events"
ONLY_AMQP_EVENTS = ("outbox-relay", "publish-many")


@dataclass
class Options:
    messages: int = 10_000  # per run of the throughput workloads
    runs: int = 3
    only: tuple[str, ...] = ()  # workload or client names; empty: all
    rate: float = 1000.0  # latency workload, messages per second
    latency_seconds: float = 5.0
    memory_messages: int = 1_000_000
    url: str | None = None  # None: AMQP_URL, else the local broker (amqp_events.testing)
    lock: str | None = None  # flock this file around each measurement


@dataclass
class Result:
    workload: str
    client: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Report:
    options: Options
    results: list[Result]
    notes: list[str]
    seconds: float


def _clients(wanted: set[str], notes: list[str]) -> list[Client]:
    clients = []
    for name, module in CLIENT_MODULES.items():
        if wanted and name not in wanted:
            continue
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith(name):
                raise
            notes.append(f"{name} skipped: not installed (pip install 'amqp-events[bench]')")
            continue
        unavailable: Callable[[], str | None] | None = getattr(loaded, "unavailable", None)
        reason = unavailable() if unavailable is not None else None
        if reason is not None:
            notes.append(f"{name} skipped: {reason}")
            continue
        clients.append(loaded.CLIENT)
    return clients


def select(only: tuple[str, ...]) -> tuple[list[str], set[str]]:
    """The workloads and clients ``only`` names (all when it names none); ValueError if unknown."""
    known = set(WORKLOADS) | set(CLIENT_MODULES)
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(
            f"unknown --only {', '.join(unknown)}: choose from {', '.join(sorted(known))}"
        )
    workloads = [w for w in WORKLOADS if w in only] or list(WORKLOADS)
    return workloads, {c for c in only if c in CLIENT_MODULES}


async def _measure(
    broker: BenchBroker, options: Options, workload: str, client: Client | None, service: str
) -> Sample:
    """One measurement, from a fresh queue to its deletion."""
    url = broker.url
    queue = queue_name(service)
    n = options.messages
    try:
        if workload == "memory":
            sample = await measure_memory(url, service, options.memory_messages)
        elif client is None:
            raise AssertionError(f"{workload} needs a client")
        elif workload == "outbox-relay":
            from .workloads_outbox import relay

            await broker.prepare_queue(queue)
            sample = await relay(url, service, n)
            in_queue = await broker.depth(queue)
            sample.extra["in_queue"] = in_queue
            sample.received = max(min(sample.received, in_queue), 0)
        elif workload == "publish-many":
            from .workloads_events import publish_many

            await broker.prepare_queue(queue)
            sample = await publish_many(url, service, n)
            in_queue = await broker.depth(queue) - WARMUP
            sample.extra["in_queue"] = in_queue
            sample.received = max(min(sample.received, in_queue), 0)
        elif workload == "consume":
            await broker.prefill(queue, n)
            sample = await client.consume(url, service, n)
            # Handled but not acknowledged went back to the queue: count those as not received.
            left = await broker.depth(queue)
            sample.extra["left_in_queue"] = left
            sample.received = min(sample.received, n - left)
        elif workload == "latency":
            count = max(round(options.rate * options.latency_seconds), 10)
            await broker.prepare_queue(queue)
            sample = await client.latency(url, service, count, options.rate, count // 10)
        else:
            await broker.prepare_queue(queue)
            publish = (
                client.publish_sequential
                if workload == "publish-sequential"
                else client.publish_pipelined
            )
            sample = await publish(url, service, n)
            # Confirmed is not enough: the messages must be in the queue.
            in_queue = await broker.depth(queue) - WARMUP
            sample.extra["in_queue"] = in_queue
            sample.received = max(min(sample.received, in_queue), 0)
    finally:
        await broker.delete_queue(queue)
    return sample


async def run_benchmarks(
    options: Options, progress: Callable[[str], None] = lambda line: None
) -> Report:
    """Run everything ``options`` selects; ``progress`` hears one line per measurement."""
    started = time.perf_counter()
    notes: list[str] = []
    workloads, wanted_clients = select(options.only)
    clients = _clients(wanted_clients, notes)
    results: list[Result] = []
    broker = BenchBroker(options.url, options.lock)
    broker.open()
    try:
        for workload in workloads:
            plan: list[list[Client | None]]
            if workload == "memory":
                if MEMORY_CLIENT in {c.name for c in clients}:
                    plan = [[None]]  # one long run: its figure is a trend, not a noisy rate
                    by_client = {MEMORY_CLIENT: Result(workload, MEMORY_CLIENT)}
                else:
                    continue
            elif workload in ONLY_AMQP_EVENTS:
                outbox_clients = [c for c in clients if c.name == OUTBOX_CLIENT]
                if not outbox_clients:
                    continue
                from .workloads_outbox import unavailable

                reason = unavailable() if workload == "outbox-relay" else None
                if reason is not None:
                    notes.append(f"outbox-relay skipped: {reason}")
                    continue
                plan = [list(outbox_clients) for _ in range(options.runs)]
                by_client = {OUTBOX_CLIENT: Result(workload, OUTBOX_CLIENT)}
            else:
                plan = [
                    [*clients[run % len(clients) :], *clients[: run % len(clients)]]
                    for run in range(options.runs)
                ]
                by_client = {c.name: Result(workload, c.name) for c in clients}
            results.extend(by_client.values())
            for run, order in enumerate(plan, 1):
                for client in order:
                    name = client.name if client else MEMORY_CLIENT
                    service = f"bench-{workload}-{name}-{run}-{uuid.uuid4().hex[:6]}"
                    result = by_client[name]
                    gc.collect()  # not in the next measurement's time
                    try:
                        with broker.lock():
                            sample = await _measure(broker, options, workload, client, service)
                    except Exception as exc:
                        result.errors.append(f"run {run}: {type(exc).__name__}: {exc}")
                        progress(f"{workload:<19} {name:<12} run {run}: FAILED {exc!r}")
                        progress(traceback.format_exc())
                        continue
                    result.samples.append(sample)
                    progress(
                        f"{workload:<19} {name:<12} run {run}/{len(plan)}: "
                        f"{sample.rate:,.0f} msg/s, {sample.cpu_us:,.0f} µs CPU/msg, "
                        f"{sample.received}/{sample.messages} received"
                    )
    finally:
        broker.close()
    if any(r.workload == "outbox-relay" and r.samples for r in results):
        from .workloads_outbox import DATABASE

        notes.append(
            f"outbox-relay: the relay of rows written beforehand, on {DATABASE.get('kind', '?')}; "
            "×pipelined = against amqp-events' publish-pipelined (publish() per event, in "
            f"windows of {PIPELINE_WINDOW:,}), ×many = against its publish-many (publish_many: "
            "a window written with no task per event)"
        )
    return Report(options, results, notes, time.perf_counter() - started)
