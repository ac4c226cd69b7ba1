"""What a broker has in flight: its consumer callbacks' tasks, and who waits for it to idle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["Activity"]

log = logging.getLogger(__name__)


class Activity:
    """The consumer callback tasks of a broker named ``name``, and the waiters woken on every
    change of its state (``wake``) to check whether it is idle; ``on_wake`` is called too (a
    virtual clock's ``poke``)."""

    def __init__(self, name: str, *, on_wake: Callable[[], None] | None = None) -> None:
        self.name = name
        self.tasks: set[asyncio.Future[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._on_wake = on_wake

    def track(self, task: asyncio.Future[None]) -> None:
        """Keep a consumer callback's task until it is done."""
        self.tasks.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Future[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                log.error(
                    "memory broker %r: a consumer callback raised; its delivery stays unsettled",
                    self.name,
                    exc_info=error,
                )
        self.wake()

    def wake(self) -> None:
        """Let waiters check again: something changed."""
        if self._on_wake is not None:
            self._on_wake()
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

    async def wait(self, idle: Callable[[], bool], busy: Callable[[], str], timeout: float) -> None:
        """Return once ``idle()``; ``TimeoutError`` saying ``busy()`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not idle():
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
        except TimeoutError:
            raise TimeoutError(
                f"memory broker {self.name!r} still busy after {timeout} s: {busy()}"
            ) from None
