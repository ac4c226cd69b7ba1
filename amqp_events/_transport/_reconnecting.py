"""ReconnectingTransport: keeps a service connected whatever the broker does.

It remembers every declaration and consumer. When the connection drops (broker restart, killed
connection, network), it opens a new session with backoff, trying each host in turn, replays the
topology and restarts every consumer. When the broker cancels one consumer (its queue was
deleted), it declares the topology again and restarts that consumer. Publishes wait for the
connection to come back, up to ``publish_timeout``, then raise ``PublishError``; close() ends
that wait at once. A publish handed to a connection that died before its confirm may have been
stored: if no later attempt is confirmed, it fails with ``PublishOutcomeUnknown``, never with a
plain ``PublishError``, which means the broker does not have it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)

from .._errors import (
    BrokerConnectionError,
    BrokerError,
    PublishError,
    PublishOutcomeUnknown,
    ReconnectFailed,
)
from .._topology import ConsumerSpec, Topology
from ._base import CloseCallback, OutgoingProperties, Session, SessionOpener
from ._wire import FRAME_MAX_DEFAULT

__all__ = ["ReconnectingTransport"]

log = logging.getLogger(__name__)

# Connections that may die under one publish before it gives up (a poison publish).
MAX_LOSSES_PER_PUBLISH = 3

_RECOVERABLE = (BrokerConnectionError, BrokerError, OSError, TimeoutError)


class _Attempt:
    """One publish going across reconnections: where to, until when, and whether a copy of it
    may already be on the broker (sent on a connection that died before confirming it)."""

    __slots__ = ("deadline", "exchange", "losses", "lost", "routing_key")

    def __init__(
        self, exchange: str, routing_key: str, deadline: float, lost: BaseException | None
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.deadline = deadline
        self.lost = lost  # the loss of the connection that had a copy, if any
        self.losses = 0 if lost is None else 1  # connections that died under this publish

    def failed(self, why: str) -> PublishError:
        """The error to raise: outcome unknown if a copy may have been stored, else not sent."""
        what = f"{self.routing_key!r} to {self.exchange!r} {why}"
        if self.lost is None:
            return PublishError(f"{what}; it was never sent, so the broker does not have it")
        return PublishOutcomeUnknown(
            f"{what}, after it was sent on a connection that was lost before the broker "
            f"confirmed it ({self.lost}): the broker may or may not have it, and a resend may "
            "duplicate it"
        )


class ReconnectingTransport:
    """The ``Transport`` the connection uses, over sessions of any broker."""

    def __init__(
        self,
        opener: SessionOpener,
        *,
        description: str,
        publish_timeout: float,
        reconnect_timeout: float | None,
        max_reconnect_wait: float = 5.0,
        topology_check_interval: float | None = None,
    ) -> None:
        self._open_session = opener
        self._description = description
        self._publish_timeout = publish_timeout
        self._reconnect_timeout = reconnect_timeout
        self._max_reconnect_wait = max_reconnect_wait
        self._topology_check_interval = topology_check_interval
        self._session: Session | None = None
        # Set while a session is up, and for good once closed or given up, so that publishes
        # waiting for a reconnection wake and look at why.
        self._ready = asyncio.Event()
        self._topology = Topology()
        self._consumers: list[ConsumerSpec] = []
        self._tags: dict[str, ConsumerSpec] = {}
        self._consuming = True
        self._closing = False
        self._failed: BaseException | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one recovery or consumer restore at a time
        self._close_callbacks: list[CloseCallback] = []

    def __repr__(self) -> str:
        return f"<ReconnectingTransport {self._description}>"

    # -- Transport --------------------------------------------------------------------------

    @property
    def frame_max(self) -> int:
        session = self._session
        return session.frame_max if session is not None else FRAME_MAX_DEFAULT

    async def connect(self) -> None:
        self._session = await self._open_session(self)
        self._ready.set()
        if self._topology_check_interval is not None:
            self._background(self._check_topology(self._topology_check_interval))

    async def declare(self, topology: Topology) -> None:
        self._topology.extend(topology)
        await self._live_session().declare(topology)

    async def consume(self, spec: ConsumerSpec) -> None:
        self._consumers.append(spec)
        session = self._live_session()
        self._tags[await session.consume(spec)] = spec

    async def stop_consuming(self) -> None:
        self._consuming = False
        tags, self._tags = self._tags, {}
        session = self._session
        if session is None or not session.is_open:
            return
        for tag in tags:
            try:
                await session.cancel(tag)
            except BrokerConnectionError:
                return  # gone with its connection: no more deliveries either way

    async def message_count(self, queue: str) -> int:
        return await self._live_session().message_count(queue)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Publish and wait for the confirm, across reconnections, up to ``publish_timeout``.

        Raises ``PublishOutcomeUnknown`` when the message was handed to a connection that then
        died (or was not confirmed in time) and no later attempt got a confirm: the broker may
        have it. Raises plain ``PublishError`` when it was never handed to a live connection,
        or the broker refused it (``Unroutable`` for a mandatory publish that reached no queue).
        """
        started = asyncio.get_running_loop().time()
        lost: BaseException | None = None
        session = self._session
        if session is not None:  # the common case: one call, no waiting
            was_open = session.is_open
            try:
                await session.publish(
                    exchange,
                    routing_key,
                    body,
                    headers,
                    properties=properties,
                    mandatory=mandatory,
                    confirm_timeout=self._publish_timeout,
                )
                return
            except BrokerConnectionError as exc:
                # Lost on the way: do not wait for the close callback to say so, or the retry
                # below would go to the same dead session.
                self.session_lost(session, exc)
                if was_open:
                    lost = exc  # it may have reached the broker before the connection died
            except PublishError as exc:
                if not await self._restored_exchange(session, exchange, exc):
                    raise
                # An operator deleted the exchange: declared again (with this connection's
                # bindings to it), the publish is tried once more below, not in a loop.
        await self._publish_after_recovery(
            _Attempt(exchange, routing_key, started + self._publish_timeout, lost),
            body,
            headers,
            properties=properties,
            mandatory=mandatory,
        )

    async def _publish_after_recovery(
        self,
        attempt: _Attempt,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._closing or self._failed is not None:
                raise attempt.failed(f"not confirmed: {self._why_unavailable()}")
            try:
                async with asyncio.timeout_at(attempt.deadline):
                    await self._ready.wait()
            except TimeoutError:
                raise attempt.failed(
                    f"not confirmed within {self._publish_timeout}s (publish_timeout): the "
                    "broker was unreachable"
                ) from None
            session = self._session
            if session is None:
                continue  # closing or given up: said at the top of the loop
            was_open = session.is_open
            try:
                await session.publish(
                    attempt.exchange,
                    attempt.routing_key,
                    body,
                    headers,
                    properties=properties,
                    mandatory=mandatory,
                    confirm_timeout=max(attempt.deadline - loop.time(), 0.001),
                )
                return
            except BrokerConnectionError as exc:
                self.session_lost(session, exc)
                if was_open:
                    attempt.lost = exc
                    attempt.losses += 1
                    if attempt.losses >= MAX_LOSSES_PER_PUBLISH:
                        # A message the broker answers by closing the connection would take
                        # down every new one too, and redeliver everything else each time.
                        raise attempt.failed(
                            f"not confirmed: {attempt.losses} connections died while it was "
                            "being published; it may be what makes the broker close them"
                        ) from exc
            except PublishOutcomeUnknown:
                raise
            except PublishError as exc:
                if attempt.lost is None:
                    raise
                # Refused now, but the copy sent on the lost connection may have been stored.
                raise attempt.failed(f"refused on the new connection ({exc})") from exc

    async def _restored_exchange(
        self, session: Session, exchange: str, refused: PublishError
    ) -> bool:
        """Declare the topology again if ``refused`` says our own ``exchange`` is gone."""
        if refused.reply_code != BrokerError.NOT_FOUND or not any(
            known.name == exchange for known in self._topology.exchanges
        ):
            return False
        log.warning(
            "%s: exchange %r is gone (deleted by an operator?); declaring it and its bindings "
            "again",
            self._description,
            exchange,
        )
        try:
            async with self._lock:
                await session.declare(self._topology)
        except (BrokerConnectionError, BrokerError) as exc:
            log.error("%s: declaring %r again failed: %s", self._description, exchange, exc)
            return False
        return True

    def _why_unavailable(self) -> str:
        if self._failed is not None:
            return f"gave up reconnecting: {self._failed}"
        return "the connection is closed (close() was called)"

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
        if spec is None or self._closing or not self._consuming or session is not self._session:
            return
        log.warning(
            "%s: the broker cancelled the consumer of %r (queue deleted?); restoring it",
            self._description,
            spec.queue,
        )
        self._background(self._restore_consumer(session, spec))

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
            reraise=True,
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
        self._tags = tags
        self._ready.set()

    async def _check_topology(self, interval: float) -> None:
        """Declare everything again now and then: an operator who deletes an exchange takes
        this connection's bindings with it, silently (no consumer is cancelled), and a queue
        nobody consumes (a DLQ) can go unnoticed. Declaring is idempotent."""
        while not self._closing:
            await asyncio.sleep(interval)
            session = self._session
            if session is None or not session.is_open:
                continue  # a reconnection declares everything anyway
            try:
                async with self._lock:
                    if session is self._session:
                        await session.declare(self._topology)
            except (BrokerConnectionError, BrokerError) as exc:
                log.warning("%s: checking the topology failed: %s", self._description, exc)

    async def _restore_consumer(self, session: Session, spec: ConsumerSpec) -> None:
        try:
            async for attempt in self._retrying():
                with attempt:
                    async with self._lock:
                        if session is not self._session or self._closing or not self._consuming:
                            return  # a reconnection restores it, or we are stopping
                        # The queue may be gone: declaring everything again brings it and its
                        # bindings back.
                        await session.declare(self._topology)
                        self._tags[await session.consume(spec)] = spec
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "%s: could not restore the consumer of %r: %s", self._description, spec.queue, exc
            )
            return
        log.warning("%s: consumer of %r restored", self._description, spec.queue)

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
