"""The time a broker's message TTLs, ``x-expires`` and ``x-death`` read: real time (``Clock``),
or, for tests, a ``VirtualClock`` that jumps to the next message expiry whenever the broker is
idle, so that retry delays pass at once."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

__all__ = ["Clock", "Timer", "VirtualClock", "running_loop"]

# Turns of the event loop the broker must stay idle before the virtual clock jumps, so that
# tasks already ready (a test's next statement after an await) act before time passes.
SETTLE_TURNS: Final = 3


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Timer(Protocol):
    """A scheduled callback: an ``asyncio.TimerHandle``, or a virtual clock's timer."""

    def cancel(self) -> None: ...

    def cancelled(self) -> bool: ...


class Clock:
    """Real time: ``time.monotonic()`` deadlines, timers on the event loop."""

    __slots__ = ()

    virtual = False

    def now(self) -> float:
        """Seconds on a monotonic clock: what message deadlines are measured in."""
        return time.monotonic()

    def wall(self) -> datetime:
        """The wall-clock time (``x-death`` ``time``)."""
        return datetime.now(UTC)

    def call_at(
        self,
        loop: asyncio.AbstractEventLoop,
        when: float,
        callback: Callable[[], None],
        *,
        pulls: bool,
    ) -> Timer:
        """Call ``callback`` on ``loop`` at ``now() == when``. (``pulls``: see VirtualClock.)"""
        return loop.call_later(max(0.0, when - time.monotonic()), callback)

    def poke(self) -> None:
        """The broker's state changed (nothing to do in real time)."""

    def pending(self) -> int:
        """How many timers an idle broker would jump to: queues whose head waits to expire
        (none in real time)."""
        return 0


class _Timer:
    __slots__ = ("callback", "done", "pulls", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callable[[], None], pulls: bool) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.pulls = pulls
        self.done = False

    def cancel(self) -> None:
        self.done = True

    def cancelled(self) -> bool:
        return self.done

    def __lt__(self, other: _Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class VirtualClock(Clock):
    """Real time plus the time skipped while the broker was idle.

    When ``idle()`` holds for ``SETTLE_TURNS`` turns of the event loop in a row, the clock
    jumps to the earliest deadline of a timer that ``pulls`` it (a message's expiry) and fires
    the timers due by then in deadline order, stopping early when one leaves the broker busy.
    Other timers (``x-expires``) run on the same clock but never pull it: an unused queue is not
    deleted just because the broker is idle. Timers also fire in real time, as with ``Clock``,
    so a broker that never idles still sees its messages expire.
    """

    __slots__ = ("_check", "_idle", "_loop", "_real", "_seq", "_skipped", "_timers", "_turns")

    virtual = True

    def __init__(self, idle: Callable[[], bool]) -> None:
        self._idle = idle
        self._skipped = 0.0
        self._timers: list[_Timer] = []  # a heap, with cancelled timers left in it lazily
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._real: asyncio.TimerHandle | None = None  # fires the earliest timer in real time
        self._check: asyncio.Handle | None = None  # the next look at whether to jump
        self._turns = 0

    @property
    def skipped(self) -> float:
        """Seconds the clock jumped ahead of real time so far."""
        return self._skipped

    def now(self) -> float:
        return time.monotonic() + self._skipped

    def wall(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._skipped)

    def call_at(
        self,
        loop: asyncio.AbstractEventLoop,
        when: float,
        callback: Callable[[], None],
        *,
        pulls: bool,
    ) -> Timer:
        """Call ``callback`` at ``now() == when``; ``pulls``: an idle broker jumps to ``when``."""
        self._use(loop)
        timer = _Timer(when, next(self._seq), callback, pulls)
        heapq.heappush(self._timers, timer)
        if self._timers[0] is timer:
            self._arm_real()
        self.poke()
        return timer

    def poke(self) -> None:
        """The broker's state changed: look again, a few turns of the loop later, whether it is
        idle with a timer to jump to."""
        if not self._timers:
            return
        loop = running_loop()
        if loop is None:
            return
        self._use(loop)
        self._turns = 0
        if self._check is None:
            self._check = loop.call_soon(self._on_check)

    def pending(self) -> int:
        return sum(1 for t in self._timers if t.pulls and not t.done)

    def _use(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` (a broker can outlive a test's event loop)."""
        if loop is self._loop:
            return
        for handle in (self._real, self._check):
            if handle is not None:
                handle.cancel()
        self._real = self._check = None
        self._loop = loop
        self._arm_real()

    def _on_check(self) -> None:
        self._check = None
        if self._pulling() is None or not self._idle():
            return  # the next change of state pokes again
        self._turns += 1
        if self._turns < SETTLE_TURNS:
            assert self._loop is not None
            self._check = self._loop.call_soon(self._on_check)
            return
        self._jump()

    def _pulling(self) -> _Timer | None:
        """The earliest live timer that pulls the clock."""
        return min((t for t in self._timers if t.pulls and not t.done), default=None)

    def _jump(self) -> None:
        target = self._pulling()
        if target is None:
            return
        while (timer := self._pop_due(target.when)) is not None:
            if timer.when > self.now():
                self._skipped += timer.when - self.now()
            timer.callback()
            if not self._idle():
                break  # the rest waits until the broker is idle again
        self._arm_real()
        self.poke()

    def _pop_due(self, limit: float) -> _Timer | None:
        """Take the earliest live timer due by ``limit``, marked done; None if there is none."""
        timers = self._timers
        while timers and timers[0].done:
            heapq.heappop(timers)
        if not timers or timers[0].when > limit:
            return None
        timer = heapq.heappop(timers)
        timer.done = True
        return timer

    def _arm_real(self) -> None:
        if self._real is not None:
            self._real.cancel()
            self._real = None
        timers = self._timers
        while timers and timers[0].done:
            heapq.heappop(timers)
        loop = self._loop
        if timers and loop is not None and not loop.is_closed():
            self._real = loop.call_later(max(0.0, timers[0].when - self.now()), self._on_real)

    def _on_real(self) -> None:
        self._real = None
        now = self.now()
        while (timer := self._pop_due(now)) is not None:
            timer.callback()
        self._arm_real()
