"""Jobs that run while a connection is started (``SetupBuilder.run_while_started``): started
after the consumers, cancelled first at close, and never allowed to die unnoticed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ._setup._builder import BackgroundWork

__all__ = ["BackgroundJobs"]

log = logging.getLogger(__name__)


class BackgroundJobs:
    """The running jobs of one connection; ``on_failure`` hears of a job that raised."""

    __slots__ = ("_on_failure", "_service", "_tasks")

    def __init__(self, service: str, on_failure: Callable[[BaseException], None]) -> None:
        self._service = service
        self._on_failure = on_failure
        self._tasks: dict[asyncio.Task[None], str] = {}

    def start(self, jobs: list[tuple[str, BackgroundWork]]) -> None:
        loop = asyncio.get_running_loop()
        for name, work in jobs:
            task = loop.create_task(self._run(name, work), name=f"{self._service}: {name}")
            self._tasks[task] = name

    async def _run(self, name: str, work: BackgroundWork) -> None:
        log.info("%s: started background job %r", self._service, name)
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "%s: background job %r failed; stopping the connection",
                self._service,
                name,
                exc_info=True,
            )
            self._on_failure(exc)
        else:
            log.info("%s: background job %r ended", self._service, name)

    async def stop(self, timeout: float) -> None:
        """Cancel every job and wait for them, up to ``timeout`` (a job may clean up)."""
        tasks = [t for t in self._tasks if not t.done()]
        current = asyncio.current_task()
        tasks = [t for t in tasks if t is not current]  # a job closing its own connection
        for task in tasks:
            task.cancel()
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=timeout)
            for task in still_running:
                log.warning(
                    "%s: background job %r did not stop within %.1fs of being cancelled",
                    self._service,
                    self._tasks[task],
                    timeout,
                )
        self._tasks.clear()
