"""The handlers running on one connection, so that shutdown can wait for them or stop them."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["InFlight"]


class InFlight:
    """The handlers running on one connection, so shutdown can wait for them (or stop them)."""

    __slots__ = ("_idle", "_tasks", "stopping")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Set when shutdown begins: a delivery that starts after it goes back to the queue
        # unhandled (it was sent before the consumer was cancelled).
        self.stopping = False

    def enter(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()

    def leave(self) -> None:
        task = asyncio.current_task()
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    def forget_current(self) -> None:
        """Stop waiting for the calling handler: it closes its own connection, and waiting for
        it would wait for the close itself."""
        task = asyncio.current_task()
        if task in self._tasks:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    @property
    def count(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def cancel_all(self) -> None:
        """Stop the handlers still running; their messages are not acked, so they come back."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
