"""ReconnectingTransport: keeps a service connected whatever the broker does.

It remembers every declaration and consumer. When the connection drops (broker restart, killed
connection, network), it opens a new session with backoff, trying each host in turn, replays the
topology and restarts every consumer. When the broker cancels one consumer (its queue was
deleted), it declares the topology again and restarts that consumer. Publishes wait for the
connection to come back, up to ``publish_timeout``, then raise ``PublishError``.
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

from .._errors import BrokerConnectionError, BrokerError, PublishError, ReconnectFailed
from .._topology import ConsumerSpec, Topology
from ._base import CloseCallback, OutgoingProperties, Session, SessionOpener

__all__ = ["ReconnectingTransport"]

log = logging.getLogger(__name__)

_RECOVERABLE = (BrokerConnectionError, BrokerError, OSError, TimeoutError)


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
    ) -> None:
        self._open_session = opener
        self._description = description
        self._publish_timeout = publish_timeout
        self._reconnect_timeout = reconnect_timeout
        self._max_reconnect_wait = max_reconnect_wait
        self._session: Session | None = None
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

    async def connect(self) -> None:
        self._session = await self._open_session(self)
        self._ready.set()

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
        session = self._session
        if session is not None:  # the common case: one call, no waiting
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
        await self._publish_after_recovery(
            exchange, routing_key, body, headers, properties=properties, mandatory=mandatory
        )

    async def _publish_after_recovery(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        while True:
            if self._closing or self._failed is not None:
                raise PublishError(
                    f"cannot publish {routing_key!r} to {exchange!r}: {self._why_unavailable()}"
                )
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(remaining):
                    await self._ready.wait()
            except TimeoutError:
                raise PublishError(
                    f"{routing_key!r} to {exchange!r} not confirmed within "
                    f"{self._publish_timeout}s: the broker was unreachable"
                ) from None
            session = self._session
            if session is None:
                continue
            try:
                await session.publish(
                    exchange,
                    routing_key,
                    body,
                    headers,
                    properties=properties,
                    mandatory=mandatory,
                    confirm_timeout=max(deadline - loop.time(), 0.001),
                )
                return
            except BrokerConnectionError as exc:
                self.session_lost(session, exc)

    def _why_unavailable(self) -> str:
        if self._failed is not None:
            return f"gave up reconnecting: {self._failed}"
        return "the connection is closed"

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for task in [self._recovery, *self._tasks]:
            if task is not None:
                task.cancel()
        session, self._session = self._session, None
        self._ready.clear()
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
