"""The reference: the workloads on amqp091-go (goamqp's client), when a Go toolchain is present.

``benchmarks/go/main.go`` does what :mod:`benchmarks.workloads_raw` does with aio-pika, with the
constants of :mod:`benchmarks.common` passed on its command line. It is built once per source
(cached under the temporary directory) in GOPATH mode, offline, against the amqp091-go source
found in ``$AMQP091_GOPATH``, ``go env GOPATH`` or Debian's ``/usr/share/gocode``
(``apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev``). Without ``go`` on PATH or
without that source, :func:`unavailable` says why and the benchmark skips this client.

Each workload runs the binary as a child process, which times itself as the Python clients do:
wall and process CPU (getrusage, every thread) over the timed section only. The child's CPU over
its whole life, connection set-up included, is kept as ``extra["process_cpu_us"]``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from .client import Client
from .common import (
    EXCHANGE,
    PIPELINE_WINDOW,
    PREFETCH,
    QUEUE_EXPIRES_MS,
    ROUTING_KEY,
    WARMUP,
    Sample,
    make_order,
    queue_name,
    wait_timeout,
)

__all__ = ["CLIENT", "NAME", "binary", "client", "go_version", "unavailable"]

NAME = "go-amqp091"
SOURCE = Path(__file__).with_name("go") / "main.go"
PACKAGE = "github.com/rabbitmq/amqp091-go"
DEBIAN_GOPATH = "/usr/share/gocode"


class GoUnavailable(Exception):
    """No Go toolchain, no amqp091-go source, or the build failed: the message says which."""


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoUnavailable(
            "no go on PATH (apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev)"
        )
    return go


def _gopath(go: str) -> str:
    """A GOPATH whose src holds amqp091-go."""
    candidates = [os.environ.get("AMQP091_GOPATH", "")]
    try:
        found = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, timeout=60, check=True
        )
        candidates += found.stdout.strip().split(os.pathsep)
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(DEBIAN_GOPATH)
    for path in filter(None, candidates):
        if Path(path, "src", PACKAGE, "channel.go").is_file():
            return path
    raise GoUnavailable(
        f"no {PACKAGE} source in {', '.join(filter(None, candidates))} "
        "(apt-get install golang-github-rabbitmq-amqp091-go-dev, or set AMQP091_GOPATH)"
    )


@functools.cache
def go_version() -> str | None:
    try:
        done = subprocess.run(
            [_go(), "version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (GoUnavailable, OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@functools.cache
def binary() -> Path:
    """The built client, built now if this source was not built before; GoUnavailable if not."""
    go = _go()
    gopath = _gopath(go)
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + (go_version() or "").encode() + gopath.encode()).hexdigest()[
        :16
    ]
    build_dir = Path(tempfile.gettempdir(), f"amqp-events-bench-go-{os.getuid()}")
    out = build_dir / f"bench-amqp091-{digest}"
    if out.is_file():
        return out
    build_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GO111MODULE": "off",  # GOPATH mode: the Debian source package, no module download
        "GOPATH": gopath,
        "GOFLAGS": "",
        "CGO_ENABLED": "0",  # no C compiler needed
        "GOCACHE": os.environ.get("GOCACHE") or str(build_dir / "cache"),
    }
    partial = out.with_suffix(".partial")
    done = subprocess.run(
        [go, "build", "-o", str(partial), str(SOURCE)],
        cwd=SOURCE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise GoUnavailable(f"go build {SOURCE} failed: {done.stderr.strip()[-2000:]}")
    partial.replace(out)
    return out


@functools.cache
def unavailable() -> str | None:
    """Why this client cannot run here (builds it if it can), or None."""
    try:
        binary()
    except GoUnavailable as exc:
        return str(exc)
    return None


def _command(workload: str, url: str, service: str, messages: int) -> list[str]:
    return [
        str(binary()),
        f"-workload={workload}",
        f"-url={url}",
        f"-exchange={EXCHANGE}",
        f"-routing-key={ROUTING_KEY}",
        f"-queue={queue_name(service)}",
        f"-queue-expires-ms={QUEUE_EXPIRES_MS}",
        f"-messages={messages}",
        f"-warmup={WARMUP}",
        f"-window={PIPELINE_WINDOW}",
        f"-prefetch={PREFETCH}",
        f"-note={make_order(0).note}",
        f"-timeout={wait_timeout(messages)}s",
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _run(command: list[str], messages: int) -> Sample:
    before = _children_cpu()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    # The client times out its own waits; this is for a client that hangs anyway.
    limit = 60.0 + 3 * wait_timeout(messages)
    try:
        async with asyncio.timeout(limit):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{NAME} did not finish within {limit:.0f}s: killed") from None
    except BaseException:  # interrupted: the client goes with the run
        process.kill()
        raise
    # Reaped by now: RUSAGE_CHILDREN includes it (and nothing else, the runner runs one at once).
    whole = _children_cpu() - before
    if process.returncode != 0:
        raise RuntimeError(
            f"{NAME} exited with {process.returncode}: {stderr.decode(errors='replace')[-2000:]}"
        )
    data = json.loads(stdout)
    sample = Sample(
        messages=int(data["messages"]),
        received=int(data["received"]),
        wall=float(data["wall"]),
        cpu=float(data["cpu"]),
        latencies_ms=[float(x) for x in data.get("latencies_ms") or []],
        extra={k: float(v) for k, v in (data.get("extra") or {}).items()},
        duplicates=int(data.get("duplicates", 0)),
    )
    if sample.messages:
        sample.extra["process_cpu_us"] = whole / sample.messages * 1e6
    return sample


def client(name: str, *, enveloped: bool = False) -> Client:
    """The Go client's workloads as ``name``; ``enveloped``: its publishes carry amqp-events'
    envelope (``-envelope``, the service name as the publishing service)."""

    def command(workload: str, url: str, service: str, messages: int) -> list[str]:
        base = _command(workload, url, service, messages)
        return [*base, f"-envelope={service}"] if enveloped else base

    async def publish_sequential(url: str, service: str, messages: int) -> Sample:
        return await _run(command("publish-sequential", url, service, messages), messages)

    async def publish_pipelined(url: str, service: str, messages: int) -> Sample:
        return await _run(command("publish-pipelined", url, service, messages), messages)

    async def consume(url: str, service: str, messages: int) -> Sample:
        return await _run(command("consume", url, service, messages), messages)

    async def latency(url: str, service: str, messages: int, rate: float, warmup: int) -> Sample:
        flags = [f"-rate={rate}", f"-warmup={warmup}"]  # the later flag wins
        return await _run([*command("latency", url, service, messages), *flags], messages)

    return Client(name, publish_sequential, publish_pipelined, consume, latency)


CLIENT = client(NAME)
