"""Medians over runs, ratios to raw aio-pika, the printed tables and the JSON file."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import statistics
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from amqp_events._url import redact

from .common import PIPELINE_WINDOW, PREFETCH, Sample
from .runner import BASELINE, REFERENCE, Report, Result
from .workloads_go import go_version

__all__ = ["Summary", "render", "summarize", "write_json"]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(math.ceil(q / 100 * len(ordered)) - 1, 0))]


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


@dataclasses.dataclass
class Summary:
    """One client on one workload: medians over its runs."""

    workload: str
    client: str
    runs: int
    rate: float  # msg/s
    cpu_us: float  # process CPU per message
    received: int  # summed over runs
    expected: int
    duplicates: int
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    rate_vs_raw: float = math.nan  # > 1: faster than raw aio-pika
    cpu_vs_raw: float = math.nan  # > 1: more CPU per message than raw aio-pika
    rate_vs_go: float = math.nan  # the same against the Go client (amqp091-go), when it ran
    cpu_vs_go: float = math.nan
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every message of every run arrived, once, and no run failed."""
        return not self.errors and self.received == self.expected and not self.duplicates


def _latencies(sample: Sample, q: float) -> float:
    return percentile(sample.latencies_ms, q)


def _summary(result: Result) -> Summary:
    samples = result.samples
    extra_keys = sorted({k for s in samples for k in s.extra})
    return Summary(
        workload=result.workload,
        client=result.client,
        runs=len(samples),
        rate=_median([s.rate for s in samples]),
        cpu_us=_median([s.cpu_us for s in samples]),
        received=sum(s.received for s in samples),
        expected=sum(s.messages for s in samples),
        duplicates=sum(s.duplicates for s in samples),
        p50_ms=_median([_latencies(s, 50) for s in samples]),
        p99_ms=_median([_latencies(s, 99) for s in samples]),
        p999_ms=_median([_latencies(s, 99.9) for s in samples]),
        extra={k: _median([s.extra[k] for s in samples if k in s.extra]) for k in extra_keys},
        errors=list(result.errors),
    )


def summarize(report: Report) -> list[Summary]:
    summaries = [_summary(r) for r in report.results]
    baseline = {s.workload: s for s in summaries if s.client == BASELINE}
    reference = {s.workload: s for s in summaries if s.client == REFERENCE}
    for summary in summaries:
        base = baseline.get(summary.workload)
        if base is not None and base.rate > 0 and base.cpu_us > 0:
            summary.rate_vs_raw = summary.rate / base.rate
            summary.cpu_vs_raw = summary.cpu_us / base.cpu_us
        ref = reference.get(summary.workload)
        if ref is not None and ref.rate > 0 and ref.cpu_us > 0:
            summary.rate_vs_go = summary.rate / ref.rate
            summary.cpu_vs_go = summary.cpu_us / ref.cpu_us
    pipelined = {s.client: s for s in summaries if s.workload == "publish-pipelined"}
    many = {s.client: s for s in summaries if s.workload == "publish-many"}
    for summary in summaries:
        if summary.workload != "outbox-relay":
            continue
        direct = pipelined.get(summary.client)
        if direct is not None and direct.rate > 0:
            summary.extra["rate_vs_pipelined"] = summary.rate / direct.rate
        batched = many.get(summary.client)
        if batched is not None and batched.rate > 0:
            summary.extra["rate_vs_many"] = summary.rate / batched.rate
    return summaries


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    # First two columns are names (left), the rest numbers (right).
    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _received(s: Summary) -> str:
    text = f"{s.received}/{s.expected}"
    if s.duplicates:
        text += f" (+{s.duplicates} dup)"
    if s.errors:
        text += f" ({len(s.errors)} failed)"
    return text


def render(report: Report, summaries: list[Summary]) -> str:
    o = report.options
    out: list[str] = []
    throughput = [s for s in summaries if s.workload.startswith(("publish", "outbox", "consume"))]
    with_go = any(s.client == REFERENCE for s in throughput)
    if throughput:
        out.append(
            f"Throughput: {o.messages:,} messages per run, median of {o.runs} run(s), "
            f"prefetch {PREFETCH}, {PIPELINE_WINDOW:,} publishes in flight (pipelined); "
            "×raw = against aio-pika"
            + (f", ×go = against Go ({REFERENCE})" if with_go else "")
            + " (msg/s: higher is faster; CPU: higher costs more)"
        )
        header = ["workload", "client", "msg/s", "CPU µs/msg", "msg/s ×raw", "CPU ×raw"]
        if with_go:
            header += ["msg/s ×go", "CPU ×go"]
        rows = []
        for s in throughput:
            row = [
                s.workload,
                s.client,
                _fmt(s.rate, ",.0f"),
                _fmt(s.cpu_us, ",.1f"),
                _fmt(s.rate_vs_raw, ".2f"),
                _fmt(s.cpu_vs_raw, ".2f"),
            ]
            if with_go:
                row += [_fmt(s.rate_vs_go, ".2f"), _fmt(s.cpu_vs_go, ".2f")]
            rows.append([*row, _received(s)])
        out += _table([*header, "received"], rows)
        out += [
            f"outbox-relay {s.client}: {s.extra['rate_vs_pipelined']:.2f}× its publish-pipelined "
            "rate (×pipelined)"
            for s in throughput
            if "rate_vs_pipelined" in s.extra
        ]
        out += [
            f"outbox-relay {s.client}: {s.extra['rate_vs_many']:.2f}× its publish-many rate (×many)"
            for s in throughput
            if "rate_vs_many" in s.extra
        ]
    latency = [s for s in summaries if s.workload == "latency"]
    if latency:
        out += [
            "",
            f"Latency, publish to handler: {o.rate:,.0f} msg/s for {o.latency_seconds:g} s, first "
            f"10% not counted; median over {o.runs} run(s) of each percentile",
        ]
        rows = [
            [
                s.workload,
                s.client,
                _fmt(s.p50_ms, ".2f"),
                _fmt(s.p99_ms, ".2f"),
                _fmt(s.p999_ms, ".2f"),
                _fmt(s.cpu_us, ",.1f"),
                _fmt(s.cpu_vs_raw, ".2f"),
                _received(s),
            ]
            for s in latency
        ]
        out += _table(
            [
                "workload",
                "client",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "CPU µs/msg",
                "CPU ×raw",
                "received",
            ],
            rows,
        )
    memory = [s for s in summaries if s.workload == "memory"]
    if memory:
        out += [
            "",
            f"Memory: {o.memory_messages:,} messages published and consumed by one connection, "
            "in a child process; RSS after gc, growth from 10% of the run to the end",
        ]
        rows = [
            [
                s.workload,
                s.client,
                _fmt(s.rate, ",.0f"),
                _fmt(s.cpu_us, ",.1f"),
                _fmt(s.extra.get("rss_base_mb", math.nan), ".1f"),
                _fmt(s.extra.get("rss_end_mb", math.nan), ".1f"),
                _fmt(s.extra.get("growth_mb", math.nan), "+.1f"),
                _fmt(s.extra.get("growth_bytes_per_message", math.nan), "+,.1f"),
                _received(s),
            ]
            for s in memory
        ]
        out += _table(
            [
                "workload",
                "client",
                "msg/s",
                "CPU µs/msg",
                "RSS@10% MiB",
                "RSS end MiB",
                "growth MiB",
                "bytes/msg",
                "received",
            ],
            rows,
        )
    for s in summaries:
        out += [f"{s.workload} {s.client}: {error}" for error in s.errors]
    out += ["", *report.notes, f"took {report.seconds:,.0f} s"]
    return "\n".join(out)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _sample_json(sample: Sample) -> dict[str, Any]:
    data = dataclasses.asdict(sample)
    # Thousands of points per run: the percentiles are what a reader compares.
    latencies = data.pop("latencies_ms")
    if latencies:
        data["latency_ms"] = {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "p99.9": percentile(latencies, 99.9),
            "max": max(latencies),
            "count": len(latencies),
        }
    data["rate"] = sample.rate
    data["cpu_us"] = sample.cpu_us
    return data


def _no_nan(value: Any) -> Any:
    """NaN is not JSON: null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def write_json(report: Report, summaries: list[Summary], path: Path) -> None:
    by_key = {(r.workload, r.client): r for r in report.results}
    data = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            **dataclasses.asdict(report.options),
            "url": redact(report.options.url) if report.options.url else None,
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": {
                p: _version(p) for p in ("amqp-events", "aio-pika", "pydantic", "faststream")
            },
            "go": go_version(),
        },
        "notes": report.notes,
        "seconds": report.seconds,
        "results": [
            {
                **dataclasses.asdict(s),
                "complete": s.complete,
                "samples": [_sample_json(x) for x in by_key[(s.workload, s.client)].samples],
            }
            for s in summaries
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(data), indent=2, ensure_ascii=False) + "\n")
