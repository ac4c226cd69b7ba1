"""Keeping one live session: reopened with backoff when lost, with what it had replayed into it.

The base of ``ReconnectingTransport``: it remembers every declaration and consumer; when the
connection drops it opens a new session with backoff (tenacity, full jitter), trying each host
in turn, declares the topology and restarts every consumer there; when the broker cancels one
consumer, it declares the topology again and restarts that one. Close listeners hear of each
loss, of giving up (``ReconnectFailed``) and of close().
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)

from .._errors import BrokerConnectionError, BrokerError, ConsumerLost, ReconnectFailed
from .._topology import ConsumerSpec, Topology
from ._base import CloseCallback, Session, SessionOpener

__all__ = ["Recovery"]

log = logging.getLogger(__name__)

_RECOVERABLE = (BrokerConnectionError, BrokerError, OSError, TimeoutError)
# A cancelled consumer is declared and consumed again at most this many times: a refusal that
# outlasts them (its queue declared by someone else with other arguments, access taken away)
# will not pass by itself, and the connection fails with ConsumerLost instead.
RESTORE_ATTEMPTS: Final = 4
# Cancels of tags not known yet (the broker's Basic.Cancel can come right behind its ConsumeOk,
# before the consume call returns the tag), kept until the tag is: at most this many.
_EARLY_CANCELS_LIMIT: Final = 64


class Recovery:
    """One session at a time over ``opener``'s broker, and what to replay into the next one."""

    def __init__(
        self,
        opener: SessionOpener,
        *,
        description: str,
        reconnect_timeout: float | None,
        max_reconnect_wait: float,
    ) -> None:
        self._open_session = opener
        self._description = description
        self._reconnect_timeout = reconnect_timeout
        self._max_reconnect_wait = max_reconnect_wait
        self._session: Session | None = None
        # Set while a session is up, and for good once closed or given up, so that publishes
        # waiting for a reconnection wake and look at why.
        self._ready = asyncio.Event()
        self._topology = Topology()
        self._consumers: list[ConsumerSpec] = []
        self._tags: dict[str, ConsumerSpec] = {}
        self._early_cancels: dict[str, None] = {}  # an ordered set, oldest first
        self._consuming = True
        self._closing = False
        self._failed: BaseException | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one recovery or consumer restore at a time
        self._close_callbacks: list[CloseCallback] = []

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        # Publishes waiting for a reconnection wake now and fail, instead of timing out.
        self._ready.set()
        for task in [self._recovery, *self._tasks]:
            if task is not None:
                task.cancel()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._notify(None)

    def add_close_callback(self, callback: CloseCallback) -> None:
        self._close_callbacks.append(callback)

    # -- SessionHooks -----------------------------------------------------------------------

    def session_lost(self, session: Session, exc: BaseException) -> None:
        if self._closing or session is not self._session:
            return
        self._session = None
        self._ready.clear()
        self._tags.clear()
        # It may not know yet that it is dead: close it so nothing lingers.
        self._background(session.close())
        log.warning("%s: connection lost (%s); reconnecting", self._description, exc)
        self._notify(
            exc
            if isinstance(exc, BrokerConnectionError)
            else BrokerConnectionError(f"connection to {self._description} lost: {exc}")
        )
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    def consumer_cancelled(self, session: Session, consumer_tag: str) -> None:
        spec = self._tags.pop(consumer_tag, None)
        if spec is None:
            if not self._closing and self._consuming:
                self._early_cancels[consumer_tag] = None
                if len(self._early_cancels) > _EARLY_CANCELS_LIMIT:
                    del self._early_cancels[next(iter(self._early_cancels))]
            return
        if self._closing or not self._consuming or session is not self._session:
            return
        log.warning(
            "%s: the broker cancelled the consumer of %r (queue deleted?); restoring it",
            self._description,
            spec.queue,
        )
        self._background(self._restore_consumer(session, spec))

    def _consuming_with(self, session: Session, tags: dict[str, ConsumerSpec]) -> None:
        """Record ``tags`` as the live consumers of ``session`` (the current one), restoring at
        once any the broker cancelled before its tag was known here."""
        self._tags.update(tags)
        if self._early_cancels:
            for tag in [tag for tag in tags if tag in self._early_cancels]:
                del self._early_cancels[tag]
                self.consumer_cancelled(session, tag)

    # -- recovery ---------------------------------------------------------------------------

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            # full jitter: services cut off together do not come back in lockstep
            wait=wait_random_exponential(multiplier=0.1, max=self._max_reconnect_wait),
            stop=(
                stop_never
                if self._reconnect_timeout is None
                else stop_after_delay(self._reconnect_timeout)
            ),
            retry=retry_if_exception_type(_RECOVERABLE),
            before_sleep=self._log_failed_attempt,
            reraise=True,
        )

    def _log_failed_attempt(self, state: RetryCallState) -> None:
        """Every failed attempt is logged: with ``reconnect_timeout=None`` a broker that keeps
        refusing (not one that is down) would otherwise be retried for ever without a word."""
        exc = state.outcome.exception() if state.outcome is not None else None
        refused = isinstance(exc, BrokerError)
        log.log(
            logging.ERROR if refused else logging.WARNING,
            "%s: reconnecting failed (attempt %d, %.0f s so far%s): %s; trying again in %.1f s",
            self._description,
            state.attempt_number,
            state.seconds_since_start,
            ", the broker refuses this service's topology" if refused else "",
            exc,
            state.upcoming_sleep,
        )

    async def _recover(self) -> None:
        try:
            async for attempt in self._retrying():
                with attempt:
                    async with self._lock:
                        await self._reopen()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed = ReconnectFailed(
                f"gave up reconnecting to {self._description} after "
                f"{self._reconnect_timeout}s: {exc}"
            )
            log.error("%s", self._failed)
            self._ready.set()  # waiting publishes fail now, saying why
            self._notify(self._failed)
            return
        log.warning(
            "%s: reconnected; topology and %d consumer(s) restored",
            self._description,
            len(self._tags),
        )

    async def _reopen(self) -> None:
        session = await self._open_session(self)
        try:
            await session.declare(self._topology)
            tags: dict[str, ConsumerSpec] = {}
            if self._consuming:
                for spec in self._consumers:
                    tags[await session.consume(spec)] = spec
        except BaseException:
            await session.close()
            raise
        if self._closing:
            await session.close()
            return
        self._session = session
        self._tags = {}
        self._consuming_with(session, tags)
        self._ready.set()

    async def _restore_consumer(self, session: Session, spec: ConsumerSpec) -> None:
        try:
            async for attempt in AsyncRetrying(
                wait=wait_random_exponential(multiplier=0.1, max=self._max_reconnect_wait),
                stop=stop_after_attempt(RESTORE_ATTEMPTS),
                retry=retry_if_exception_type(_RECOVERABLE),
                reraise=True,
            ):
                with attempt:
                    async with self._lock:
                        if session is not self._session or self._closing or not self._consuming:
                            return  # a reconnection restores it, or we are stopping
                        # The queue may be gone: declaring everything again brings it and its
                        # bindings back.
                        try:
                            await session.declare(self._topology)
                            tag = await session.consume(spec)
                        except Exception as exc:
                            log.warning(
                                "%s: restoring the consumer of %r failed (attempt %d of %d): %s",
                                self._description,
                                spec.queue,
                                attempt.retry_state.attempt_number,
                                RESTORE_ATTEMPTS,
                                exc,
                            )
                            raise
                        self._consuming_with(session, {tag: spec})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if session is not self._session or self._closing:
                return  # the connection went meanwhile: a reconnection restores the consumer
            self._consumer_lost(spec, exc)
            return
        log.warning("%s: consumer of %r restored", self._description, spec.queue)

    def _consumer_lost(self, spec: ConsumerSpec, exc: Exception) -> None:
        """Fail loudly: a service that stopped consuming one of its queues, with no word but a
        log line, loses nothing yet but handles nothing either."""
        lost = ConsumerLost(
            spec.queue,
            f"{self._description}: the broker cancelled the consumer of {spec.queue!r} (queue "
            f"deleted?) and it could not be restored in {RESTORE_ATTEMPTS} attempts: {exc}. "
            "Declare the queue as this service does (or delete the one declared in its place) "
            "and start the service again",
            reply_code=exc.reply_code if isinstance(exc, BrokerError) else None,
        )
        log.error("%s", lost)
        self._notify(lost)

    # -- helpers ----------------------------------------------------------------------------

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that is kept referenced until done, and cancelled on close."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _live_session(self) -> Session:
        session = self._session
        if session is None:
            raise BrokerConnectionError(f"not connected to {self._description}")
        return session

    def _notify(self, exc: BaseException | None) -> None:
        for callback in list(self._close_callbacks):
            try:
                callback(exc)
            except Exception:
                log.exception("close listener %r failed", callback)
