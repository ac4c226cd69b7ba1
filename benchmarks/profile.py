"""``python -m benchmarks.profile``: where the CPU of one message goes, by package.

    python -m benchmarks.profile --workload publish-pipelined --client amqp-events
    python -m benchmarks.profile --workload consume --client aio-pika --lock /tmp/broker.lock
    python -m benchmarks.profile --from-raw consume.txt --cpu-us 180   # re-aggregate a recording

It runs one long measurement of a benchmark workload (the same code as ``python -m benchmarks``)
and samples this process with py-spy (``--nonblocking``, ``--rate`` per second) only while the
workload's clock runs, so connection set-up, warm-up and tear-down stay out of the profile. Each
sample is charged to a package by its innermost Python frame; a sample's share of all samples,
times the CPU per message the run measured, is that package's microseconds per message.

- Time in C code is charged to the Python frame that called it: ``struct.pack`` in pamqp is
  pamqp's, pydantic-core's Rust is pydantic's. Lines of asyncio that call ``send``/``recv`` on
  the socket and of selectors that poll are charged to ``socket``, not to ``asyncio``.
- "self" charges each sample to the file it stopped in; "owner" charges samples that stopped in
  the standard library (other than asyncio, selectors and socket: uuid, enum, datetime ...) to
  the nearest caller in a package, so that ``uuid4`` for our message ids counts as ours, and
  charges the benchmark's making of each event (a pydantic model) to the benchmark.
- For ``consume`` a child process fills the queue first (``--prefill plain``: aio-pika messages
  without headers, as the benchmark does; ``--prefill envelope``: published by amqp-events, with
  its CloudEvents headers), so the filling does not show in the profile.

Like the benchmark, it works in a vhost of its own and deletes it afterwards. Without py-spy
(``pip install py-spy``) or with ``--no-sample`` it only runs and times the workload, for an
outside profiler: ``py-spy record -o x.svg -- python -m benchmarks.profile consume --no-sample``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import linecache
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .broker import BenchBroker, prefill
from .client import Client, PublishWorkload
from .common import PIPELINE_WINDOW, ROUTING_KEY, Sample, Stopwatch, make_order, queue_name

__all__ = ["Profile", "aggregate", "main", "render"]

WORKLOADS = ("publish-sequential", "publish-pipelined", "consume")
CLIENTS = {
    "aio-pika": "benchmarks.workloads_raw",
    "amqp-events": "benchmarks.workloads_events",
    "faststream": "benchmarks.workloads_faststream",
}
# Package -> the path part that identifies its files, in the order they are tried.
PACKAGES = (
    ("amqp-events", "/amqp_events/"),
    ("aio-pika", "/aio_pika/"),
    ("aiormq", "/aiormq/"),
    ("pamqp", "/pamqp/"),
    ("pydantic", "/pydantic/"),
    ("pydantic", "/pydantic_core/"),
    ("faststream", "/faststream/"),
    ("benchmark", "/benchmarks/"),
)
ASYNCIO = "asyncio"
SOCKET = "socket"
STDLIB = "other"  # the rest of the standard library, in "self"
CATEGORIES = (
    "amqp-events",
    "aio-pika",
    "aiormq",
    "pamqp",
    "pydantic",
    "faststream",
    ASYNCIO,
    SOCKET,
    "benchmark",
    STDLIB,
)
# Inclusive time of these functions (every sample with the function anywhere on its stack):
# (label, file suffix, qualified name as py-spy shows it).
SPOTLIGHT = (
    ("pamqp: header table encode (encode.field_table)", "/pamqp/encode.py", "field_table"),
    ("pamqp: header table decode (decode.field_table)", "/pamqp/decode.py", "field_table"),
    (
        "pamqp: all properties encode (BasicProperties.marshal)",
        "/pamqp/base.py",
        "BasicProperties.marshal",
    ),
    (
        "pamqp: all properties decode (BasicProperties.unmarshal)",
        "/pamqp/base.py",
        "BasicProperties.unmarshal",
    ),
    ("pamqp: every frame out (frame.marshal)", "/pamqp/frame.py", "marshal"),
    ("pamqp: every frame in (frame.unmarshal)", "/pamqp/frame.py", "unmarshal"),
    ("aiormq: Channel.basic_publish", "/aiormq/channel.py", "Channel.basic_publish"),
    ("aiormq: Channel._on_confirm_frame", "/aiormq/channel.py", "Channel._on_confirm_frame"),
    ("aiormq: Channel._on_deliver_frame", "/aiormq/channel.py", "Channel._on_deliver_frame"),
    ("aiormq: Channel.basic_ack", "/aiormq/channel.py", "Channel.basic_ack"),
    ("aiormq: frame reader (Connection.__reader)", "/aiormq/connection.py", "Connection.__reader"),
    ("aio-pika: Exchange.publish", "/aio_pika/exchange.py", "Exchange.publish"),
    ("amqp-events: Publisher.publish", "/amqp_events/_publisher.py", "Publisher.publish"),
    ("amqp-events: outgoing envelope", "/amqp_events/_envelope.py", "outgoing_envelope"),
    ("amqp-events: amqp_properties", "/amqp_events/_transport/_wire.py", "amqp_properties"),
    ("amqp-events: event encode (_codec.encode)", "/amqp_events/_codec.py", "encode"),
    ("pydantic: model_dump_json", "/pydantic/main.py", "BaseModel.model_dump_json"),
    ("pydantic: model_validate_json", "/pydantic/main.py", "BaseModel.model_validate_json"),
    ("asyncio: create_task", "/asyncio/base_events.py", "BaseEventLoop.create_task"),
)
_STDLIB_DIR = sysconfig.get_paths()["stdlib"]
_REPOSITORY = str(Path(__file__).resolve().parents[1])
_SOCKET_CALLS = (".send(", ".recv(", ".recv_into(", ".sendmsg(", ".sendto(", ".poll(")


@dataclasses.dataclass(frozen=True)
class Frame:
    function: str
    path: str
    line: int

    @property
    def name(self) -> str:
        return f"{self.function} ({_short(self.path)}:{self.line})"


@dataclasses.dataclass
class Profile:
    """Samples of one run charged to packages, and the run's CPU per message."""

    samples: int
    cpu_us: float  # per message, over the sampled (timed) section
    self_by_category: dict[str, int]
    owner_by_category: dict[str, int]
    self_by_function: dict[str, int]
    spotlight: dict[str, int]
    other_modules: dict[str, int]  # "other" in "self", by stdlib module

    def us(self, count: int) -> float:
        return count / self.samples * self.cpu_us if self.samples else 0.0


def _short(path: str) -> str:
    for marker in ("site-packages/", _REPOSITORY + "/", _STDLIB_DIR + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _parse_frame(text: str) -> Frame:
    # py-spy's raw frames: "function (path:line)"; native frames may lack the location.
    function, _, location = text.rpartition(" (")
    if not function or not location.endswith(")"):
        return Frame(text, "", 0)
    path, _, line = location[:-1].rpartition(":")
    return Frame(function, path, int(line) if line.isdigit() else 0)


def _package(frame: Frame) -> str | None:
    for name, marker in PACKAGES:
        if marker in frame.path:
            return name
    return None


def _is_socket_line(frame: Frame) -> bool:
    if not frame.path.startswith(_STDLIB_DIR):
        return False
    if frame.path.endswith("/socket.py"):
        return True
    if not frame.path.endswith(("/selector_events.py", "/selectors.py")):
        return False
    text = linecache.getline(frame.path, frame.line)
    return any(call in text for call in _SOCKET_CALLS)


def _self_category(frame: Frame) -> str:
    package = _package(frame)
    if package is not None:
        return package
    if _is_socket_line(frame):
        return SOCKET
    if frame.path.startswith(_STDLIB_DIR) and (
        "/asyncio/" in frame.path or frame.path.endswith("/selectors.py")
    ):
        return ASYNCIO
    return STDLIB


def _owner_category(stack: list[Frame]) -> str:
    if any(f.function == "make_order" and "/benchmarks/" in f.path for f in stack):
        return "benchmark"  # making the event to send is the caller's work, not the client's
    leaf = _self_category(stack[-1])
    if leaf != STDLIB:
        return leaf
    for frame in reversed(stack[:-1]):
        category = _self_category(frame)
        if category != STDLIB:
            return category
    return STDLIB


def _stdlib_module(frame: Frame) -> str:
    path = _short(frame.path)
    return path.removesuffix(".py").replace("/", ".") if path else frame.function


def read_raw(path: Path) -> Iterator[tuple[list[Frame], int]]:
    """The stacks (outermost frame first) and counts of a ``py-spy record -f raw`` file."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_parse_frame(f) for f in stack.split(";")]
        # With --threads the first "frame" names the thread; with --native, C frames show up
        # without a Python location: neither is a Python frame to charge.
        python = [f for f in frames if f.path.endswith(".py")]
        if python:
            yield python, int(count)


def aggregate(path: Path, cpu_us: float) -> Profile:
    """Charge the samples of the raw py-spy file ``path`` to packages and functions."""
    by_self: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    spotlight: Counter[str] = Counter()
    other: Counter[str] = Counter()
    total = 0
    for stack, count in read_raw(path):
        total += count
        leaf = stack[-1]
        category = _self_category(leaf)
        by_self[category] += count
        by_owner[_owner_category(stack)] += count
        by_function[_function_key(leaf, category)] += count
        if category == STDLIB:
            other[_stdlib_module(leaf)] += count
        for label, suffix, function in SPOTLIGHT:
            if any(f.function == function and f.path.endswith(suffix) for f in stack):
                spotlight[label] += count
    return Profile(
        samples=total,
        cpu_us=cpu_us,
        self_by_category=dict(by_self),
        owner_by_category=dict(by_owner),
        self_by_function=dict(by_function),
        spotlight=dict(spotlight),
        other_modules=dict(other),
    )


def _function_key(frame: Frame, category: str) -> str:
    return f"{frame.function} ({_short(frame.path)}) [{category}]"


def render(profile: Profile, title: str, top: int = 15) -> str:
    """Markdown tables: µs per message by package (self and owner), the top functions by self
    time, and the inclusive time of the spotlighted functions."""
    p = profile
    out = [
        f"### {title}",
        "",
        f"{p.samples:,} samples; {p.cpu_us:,.1f} µs of process CPU per message in the run.",
        "",
        "| package | self µs/msg | self % | owner µs/msg | owner % |",
        "|---|---:|---:|---:|---:|",
    ]
    for category in CATEGORIES:
        s = p.self_by_category.get(category, 0)
        o = p.owner_by_category.get(category, 0)
        if s or o:
            out.append(
                f"| {category} | {p.us(s):,.1f} | {_pct(s, p.samples)} "
                f"| {p.us(o):,.1f} | {_pct(o, p.samples)} |"
            )
    out.append(f"| **total** | **{p.cpu_us:,.1f}** | 100% | **{p.cpu_us:,.1f}** | 100% |")
    if p.other_modules:
        modules = sorted(p.other_modules.items(), key=lambda kv: -kv[1])[:6]
        listed = ", ".join(f"{m} {p.us(c):,.1f}" for m, c in modules)
        out += ["", f"Self time in the rest of the standard library, µs/msg: {listed}."]
    out += ["", f"Top {top} functions by self time:", ""]
    out += ["| function | µs/msg | % |", "|---|---:|---:|"]
    for name, count in sorted(p.self_by_function.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"| `{name}` | {p.us(count):,.1f} | {_pct(count, p.samples)} |")
    if p.spotlight:
        out += ["", "Inclusive (the function and all it calls):", ""]
        out += ["| function | µs/msg | % |", "|---|---:|---:|"]
        for label, _, _ in SPOTLIGHT:
            count = p.spotlight.get(label, 0)
            if count:
                out.append(f"| {label} | {p.us(count):,.1f} | {_pct(count, p.samples)} |")
    return "\n".join(out)


def _pct(count: int, total: int) -> str:
    return f"{count / total:.1%}" if total else "-"


class _Sampler:
    """py-spy recording this process from ``start()`` to ``stop()``: the workload's clock."""

    def __init__(self, py_spy: str, output: Path, rate: int, native: bool) -> None:
        self._command = [
            py_spy,
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--full-filenames",
            "--nonblocking",
            "--output",
            str(output),
            *(["--native"] if native else []),
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._process is None:
            self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C

    def wait(self) -> int:
        if self._process is None:
            raise RuntimeError("py-spy never started: the workload's clock did not run")
        return self._process.wait(timeout=60)


def _hooked_stopwatch(sampler: _Sampler) -> None:
    """Start and stop ``sampler`` with every :class:`Stopwatch` (the workloads' clocks)."""
    start, stop = Stopwatch.start, Stopwatch.stop

    def hooked_start(self: Stopwatch) -> None:
        sampler.start()
        start(self)

    def hooked_stop(self: Stopwatch) -> None:
        stop(self)
        sampler.stop()

    Stopwatch.start = hooked_start  # type: ignore[method-assign]
    Stopwatch.stop = hooked_stop  # type: ignore[method-assign]


def _prefill_plain(url: str, queue: str, messages: int) -> None:
    asyncio.run(prefill(url, queue, messages))


def _prefill_envelope(url: str, queue: str, messages: int) -> None:
    asyncio.run(_publish_with_envelope(url, messages))


async def _publish_with_envelope(url: str, messages: int) -> None:
    from amqp_events import Connection, Publisher, Route, event_stream_publisher

    from .common import Order

    publisher = Publisher(Route(Order, ROUTING_KEY))
    async with Connection("bench-profile-prefill", url) as conn:
        await conn.start(event_stream_publisher(publisher))
        for first in range(0, messages, PIPELINE_WINDOW):
            window = range(first, min(first + PIPELINE_WINDOW, messages))
            await asyncio.gather(*(publisher.publish(make_order(i)) for i in window))


async def _run(
    broker: BenchBroker, client: Client, workload: str, messages: int, fill: str
) -> Sample:
    service = f"bench-profile-{workload}"
    queue = queue_name(service)
    await broker.prepare_queue(queue)  # routed and stored, as in the benchmark
    if workload == "consume":
        filler: Callable[[str, str, int], None] = (
            _prefill_envelope if fill == "envelope" else _prefill_plain
        )
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(filler, broker.url, queue, messages).result()
    try:
        run: PublishWorkload = {
            "publish-sequential": client.publish_sequential,
            "publish-pipelined": client.publish_pipelined,
            "consume": client.consume,
        }[workload]
        return await run(broker.url, service, messages)
    finally:
        await broker.delete_queue(queue)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    parser.add_argument("workload_arg", nargs="?", choices=WORKLOADS, metavar="WORKLOAD")
    parser.add_argument("--workload", choices=WORKLOADS, help="(or as the first argument)")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="amqp-events")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--prefill", choices=("plain", "envelope"), default="plain")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--top", type=int, default=15, help="functions listed (15)")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw recording here")
    parser.add_argument("--json", type=Path, help="write the aggregated profile here")
    parser.add_argument("--no-sample", action="store_true", help="run and time only")
    parser.add_argument("--from-raw", type=Path, help="aggregate this recording; no run")
    parser.add_argument("--cpu-us", type=float, help="with --from-raw: CPU µs per message")
    parser.add_argument("--url", help="broker URL (AMQP_URL, else the local RabbitMQ)")
    parser.add_argument("--lock", metavar="PATH", help="hold flock(PATH) for the whole run")
    return parser


def _report(profile: Profile, title: str, args: argparse.Namespace) -> None:
    print(render(profile, title, args.top))
    if args.json:
        data: dict[str, Any] = {"title": title, **dataclasses.asdict(profile)}
        args.json.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.from_raw:
        if args.cpu_us is None:
            parser.error("--from-raw needs --cpu-us")
        _report(aggregate(args.from_raw, args.cpu_us), str(args.from_raw), args)
        return 0
    workload = args.workload or args.workload_arg
    if workload is None:
        parser.error("name a workload: " + ", ".join(WORKLOADS))
    client: Client = importlib.import_module(CLIENTS[args.client]).CLIENT
    py_spy = None if args.no_sample else _find_py_spy()
    if py_spy is None and not args.no_sample:
        print("py-spy not found (pip install py-spy): running without sampling", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="amqp-events-profile-") as tmp:
        raw = args.raw or Path(tmp, "profile.txt")
        sampler = _Sampler(py_spy, raw, args.rate, args.native) if py_spy else None
        if sampler is not None:
            _hooked_stopwatch(sampler)
        broker = BenchBroker(args.url, args.lock)
        broker.open()
        try:
            with broker.lock():
                sample = asyncio.run(_run(broker, client, workload, args.messages, args.prefill))
        finally:
            broker.close()
        print(
            f"{workload} {args.client}: {sample.rate:,.0f} msg/s, {sample.cpu_us:,.1f} µs "
            f"CPU/msg, {sample.received}/{sample.messages} received",
            file=sys.stderr,
        )
        if sampler is not None:
            sampler.wait()
            title = f"{workload}, {args.client}"
            if workload == "consume":
                title += f" ({args.prefill} messages)"
            title += f": {sample.rate:,.0f} msg/s"
            _report(aggregate(raw, sample.cpu_us), title, args)
    return 0 if sample.received == sample.messages else 1


def _find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


if __name__ == "__main__":
    sys.exit(main())
