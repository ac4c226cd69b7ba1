"""``amqp-events run``: serve an APP until SIGINT or SIGTERM, as ``uvicorn`` and ``faststream
run`` do.

- One process: the APP's ``Connection.run()`` (graceful close on the signal).
- ``--workers N``: N processes, each running the APP (competing consumers on the same queues).
  The parent forwards SIGINT and SIGTERM to them, waits for all, and exits non-zero if one
  failed; one that fails on its own stops the others.
- ``--reload``: one process, restarted when a ``.py`` file under the APP's directory changes
  (watchfiles, from the ``cli`` extra).
- Once the APP has started, what start-up made is moved out of the cyclic GC's reach
  (``gc.freeze()``, unless ``--no-gc-freeze``): a service publishing thousands of events a
  second with many in flight otherwise spends about a sixth of its CPU re-traversing its
  imports and models in full collections (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shlex
import signal
import subprocess
import sys
import time
from types import FrameType

from .._errors import (
    AmqpEventsError,
    BrokerConnectionError,
    ConfigurationError,
    ReconnectFailed,
)
from .._setup._builder import SetupBuilder
from ._app import app_directory, load_app, override_url
from ._errors import (
    EXIT_BROKER,
    EXIT_FOUND_PROBLEMS,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
)

__all__ = ["run_reloading", "run_workers", "serve"]

log = logging.getLogger("amqp_events.cli")

# How long a worker may take to close after the signal (its shutdown_timeout is 30 s by
# default), before --reload kills it.
STOP_TIMEOUT = 35


def _freeze_after_start(setup: SetupBuilder) -> None:
    setup.run_while_started("gc-freeze", _freeze)


async def _freeze() -> None:
    """Collect start-up's garbage, then freeze the rest: never traversed by the cyclic GC again
    (and, should it become garbage later, never collected: it is the service's own set-up)."""
    gc.collect()
    gc.freeze()


async def serve(spec: str, url: str | None, *, gc_freeze: bool = True) -> int:
    """Run the APP in this process until SIGINT or SIGTERM."""
    connection = await load_app(spec)
    if url is not None:
        override_url(connection, url)
    if gc_freeze:
        connection.use(_freeze_after_start)
    log.info("serving %s from %s on %s", connection.service_name, spec, connection.url)
    try:
        await connection.run()
    except ConfigurationError as exc:
        raise CliError(f"{connection.service_name}: {exc}", EXIT_USAGE) from None
    except (BrokerConnectionError, ReconnectFailed) as exc:
        raise CliError(f"{connection.service_name}: {exc}", EXIT_BROKER) from None
    except AmqpEventsError as exc:
        raise CliError(f"{connection.service_name}: {exc}", EXIT_FOUND_PROBLEMS) from None
    log.info("%s stopped", connection.service_name)
    return EXIT_OK


def _worker_command(spec: str, url: str | None, log_level: str, gc_freeze: bool) -> list[str]:
    command = [sys.executable, "-m", "amqp_events", "run", spec, "--log-level", log_level]
    if url is not None:
        command += ["--url", url]
    if not gc_freeze:
        command.append("--no-gc-freeze")
    return command


def run_workers(
    spec: str, url: str | None, workers: int, log_level: str, *, gc_freeze: bool = True
) -> int:
    """N processes of the APP; the signals forwarded; non-zero if a worker failed."""
    asyncio.run(load_app(spec))  # a bad APP is reported once, here, not by every worker
    command = _worker_command(spec, url, log_level, gc_freeze)
    processes = [subprocess.Popen(command) for _ in range(workers)]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed: list[tuple[int, int]] = []
    try:
        running = list(processes)
        while running:
            for process in list(running):
                code = process.poll()
                if code is None:
                    continue
                running.remove(process)
                if code != 0:
                    failed.append((process.pid, code))
                    if not stopping:
                        stopping = True
                        log.error(
                            "worker %d exited with %d: stopping the others", process.pid, code
                        )
                        for other in running:
                            other.send_signal(signal.SIGTERM)
            time.sleep(0.05)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        details = ", ".join(f"pid {pid} exited with {code}" for pid, code in failed)
        raise CliError(
            f"{len(failed)} of {workers} worker(s) failed: {details}", EXIT_FOUND_PROBLEMS
        )
    return EXIT_OK


def run_reloading(spec: str, url: str | None, log_level: str, *, gc_freeze: bool = True) -> int:
    """One process of the APP, restarted when a .py file under its directory changes."""
    try:
        import watchfiles
    except ImportError:
        raise CliError(
            "run --reload needs watchfiles: pip install 'amqp-events[cli]'", EXIT_USAGE
        ) from None
    directory = app_directory(spec)
    asyncio.run(load_app(spec))  # a bad APP is reported here, before watching
    log.info("watching %s for changes to .py files", directory)

    def changed(changes: set[tuple[watchfiles.Change, str]]) -> None:
        files = sorted({path for _, path in changes})
        log.info("reloading: %s changed", ", ".join(files[:5]))

    watchfiles.run_process(
        directory,
        target=shlex.join(_worker_command(spec, url, log_level, gc_freeze)),
        target_type="command",
        watch_filter=watchfiles.PythonFilter(),
        callback=changed,
        sigint_timeout=STOP_TIMEOUT,
    )
    return EXIT_OK
