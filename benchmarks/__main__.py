"""``python -m benchmarks``: raw aio-pika, amqp-events, FastStream and Go on the same workloads.

Go (client ``go-amqp091``, amqp091-go, the reference) runs when ``go`` is on PATH and the
amqp091-go source is installed (Debian: golang-go, golang-github-rabbitmq-amqp091-go-dev);
otherwise it is skipped with a note, as FastStream is when it is not installed. Client
``go-enveloped`` is the same Go client sending amqp-events' envelope (a message id, a timestamp
and eight headers per message), so that both put the same messages on the wire.

Workloads (``--only`` takes these names, or client names, comma-separated or repeated):

- ``publish-sequential``: confirmed persistent publishes, each awaited;
- ``publish-pipelined``: the same, 1,000 in flight at a time (``AMQP_EVENTS_BENCH_WINDOW``
  sets another window, ``AMQP_EVENTS_BENCH_PREFETCH`` another prefetch than 20);
- ``publish-many``: amqp-events' ``publish_many``, 1,000 events per call (a window written at
  once, no task per event); amqp-events only;
- ``outbox-relay``: amqp-events' outbox relay publishing rows written beforehand (PostgreSQL
  when ``AMQP_EVENTS_POSTGRES_URL`` or the local server answers, else SQLite), next to
  amqp-events' ``publish-pipelined`` (×pipelined) and ``publish-many`` (×many); skipped
  without the ``outbox`` extra;
- ``consume``: a pre-filled queue consumed with ack and pydantic decode;
- ``latency``: publish to handler at a fixed rate, p50/p99/p99.9;
- ``memory``: RSS over a long publish+consume run of amqp-events.

The broker is ``--url``, else ``AMQP_URL``, else RabbitMQ on 127.0.0.1:5672. The benchmark works
in a vhost of its own, made for the run and deleted afterwards (by the management API or the local
``rabbitmqctl``, as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from .report import render, summarize, write_json
from .runner import CLIENT_MODULES, WORKLOADS, Options, run_benchmarks, select

# --quick: a look in about a minute, not a measurement to quote.
_QUICK = {"messages": 1_000, "runs": 1, "latency_seconds": 2.0, "memory_messages": 20_000}
_FULL = {"messages": 10_000, "runs": 3, "latency_seconds": 5.0, "memory_messages": 1_000_000}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
    )
    parser.add_argument(
        "--messages", type=int, metavar="N", help="per run of the throughput workloads (10,000)"
    )
    parser.add_argument("--runs", type=int, metavar="K", help="runs per figure, median (3)")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="results file (benchmarks/results/<UTC time>.json)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"workloads ({', '.join(WORKLOADS)}) and/or clients ({', '.join(CLIENT_MODULES)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one run: "
        + ", ".join(f"{k.replace('_', '-')} {v:,}" for k, v in _QUICK.items()),
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="latency: msg/s (1,000)")
    parser.add_argument("--latency-seconds", type=float, metavar="S", help="latency: duration (5)")
    parser.add_argument(
        "--memory-messages", type=int, metavar="N", help="memory run length (1,000,000)"
    )
    parser.add_argument("--url", help="broker URL (AMQP_URL, else amqp://guest:guest@127.0.0.1/)")
    parser.add_argument(
        "--lock",
        metavar="PATH",
        help="hold flock(PATH) around each measurement, for a broker shared with others",
    )
    return parser


def _options(args: argparse.Namespace) -> Options:
    sizes = _QUICK if args.quick else _FULL
    given = {k: getattr(args, k) for k in sizes if getattr(args, k) is not None}
    chosen = {**sizes, **given}
    for name, value in chosen.items():
        if value <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {value}")
    only = tuple(n.strip() for item in args.only for n in item.split(",") if n.strip())
    try:
        select(only)
    except ValueError as exc:
        raise SystemExit(f"python -m benchmarks: {exc}") from None
    return Options(
        messages=int(chosen["messages"]),
        runs=int(chosen["runs"]),
        only=only,
        rate=args.rate,
        latency_seconds=float(chosen["latency_seconds"]),
        memory_messages=int(chosen["memory_messages"]),
        url=args.url,
        lock=args.lock,
    )


def _terminated(signum: int, frame: object) -> None:
    # As Ctrl-C: the run unwinds and deletes its vhost, instead of leaving it on the broker.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    args = _parser().parse_args(argv)
    options = _options(args)
    path = args.json or Path(
        "benchmarks", "results", datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ".json"
    )
    report = asyncio.run(
        run_benchmarks(options, progress=lambda line: print(line, file=sys.stderr))
    )
    summaries = summarize(report)
    print(render(report, summaries))
    write_json(report, summaries, path)
    print(f"results: {path}")
    return 0 if all(s.complete for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
