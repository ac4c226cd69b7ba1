"""ReconnectingTransport: keeps a service connected whatever the broker does.

It remembers every declaration and consumer. When the connection drops (broker restart, killed
connection, network), it opens a new session with backoff, trying each host in turn, replays the
topology and restarts every consumer. When the broker cancels one consumer (its queue was
deleted), it declares the topology again and restarts that consumer. Publishes wait for the
connection to come back, up to ``publish_timeout``, then raise ``PublishError``; close() ends
that wait at once. A publish handed to a connection that died before its confirm may have been
stored: if no later attempt is confirmed, it fails with ``PublishOutcomeUnknown``, never with a
plain ``PublishError``, which means the broker does not have it.

The ``Transport`` face is here, with the publish's common path (one call on the live session).
Its layers, one module each: ``Recovery`` (``_recovery``: reconnecting and replaying),
``HeldPublishes`` (``_held_publishes``: publishes waiting for a reconnection, the poison-publish
guard) and ``TopologyCheck`` (``_topology_check``: declaring again on a live connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from .._envelope import Envelope
from .._errors import BrokerConnectionError, PublishError
from .._topology import ConsumerSpec, Topology
from ._base import OutgoingProperties, PublishItem, Session, SessionOpener
from ._held_publishes import Attempt, HeldPublishes
from ._topology_check import TopologyCheck
from ._wire import FRAME_MAX_DEFAULT

__all__ = ["ReconnectingTransport"]


class ReconnectingTransport(HeldPublishes, TopologyCheck):
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
        super().__init__(
            opener,
            description=description,
            reconnect_timeout=reconnect_timeout,
            max_reconnect_wait=max_reconnect_wait,
        )
        self._publish_timeout = publish_timeout
        self._topology_check_interval = topology_check_interval

    def __repr__(self) -> str:
        return f"<ReconnectingTransport {self._description}>"

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
        self._consuming_with(session, {await session.consume(spec): spec})

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

    @property
    def publish_timeout(self) -> float:
        return self._publish_timeout

    @property
    def open_session(self) -> Session | None:
        """The live session, if it is open: a caller may start an enveloped publish on it
        (``Session.publish_now``) and await its confirm in its own frame, with no coroutine of
        the transport's per publish; if that fails, ``publish_failed`` takes over."""
        session = self._session
        return session if session is not None and session.is_open else None

    async def publish_failed(
        self,
        session: Session,
        failed: Exception,
        started: float,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        mandatory: bool,
        envelope: Envelope,
    ) -> None:
        """``session.publish_now(...)``, started at loop time ``started`` on the open session,
        or the confirm it returned, failed with ``failed``: raise what ``publish`` raises then,
        or publish again once the connection is back, as ``publish`` does."""
        mapped = session.publish_failure(failed, exchange, routing_key, self._publish_timeout)
        if not isinstance(mapped, (BrokerConnectionError, PublishError)):
            raise mapped
        await self._publish_again(
            session,
            mapped,
            True,
            started,
            exchange,
            routing_key,
            body,
            headers,
            properties=None,
            mandatory=mandatory,
            envelope=envelope,
        )

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None = None,
        mandatory: bool = False,
        envelope: Envelope | None = None,
    ) -> None:
        """Publish and wait for the confirm, across reconnections, up to ``publish_timeout``.

        Raises ``PublishOutcomeUnknown`` when the message was handed to a connection that then
        died (or was not confirmed in time) and no later attempt got a confirm: the broker may
        have it. Raises plain ``PublishError`` when it was never handed to a live connection,
        or the broker refused it (``Unroutable`` for a mandatory publish that reached no queue).
        """
        started = asyncio.get_running_loop().time()
        session = self._session
        if session is not None:  # the common case: one call, no waiting
            was_open = session.is_open
            try:
                confirmed = (
                    session.publish_now(
                        exchange,
                        routing_key,
                        body,
                        headers,
                        mandatory=mandatory,
                        confirm_timeout=self._publish_timeout,
                        envelope=envelope,
                    )
                    if envelope is not None and properties is None
                    else None
                )
                if confirmed is None:
                    await session.publish(
                        exchange,
                        routing_key,
                        body,
                        headers,
                        properties=properties,
                        mandatory=mandatory,
                        confirm_timeout=self._publish_timeout,
                        envelope=envelope,
                    )
                    return
            except (BrokerConnectionError, PublishError) as exc:
                failed: BaseException | None = exc
            else:
                assert envelope is not None  # publish_now() was called: it has one
                try:  # no coroutine of the session's in between: one frame less per publish
                    await confirmed
                    return
                except Exception as exc:
                    unconfirmed = exc
                await self.publish_failed(
                    session,
                    unconfirmed,
                    started,
                    exchange,
                    routing_key,
                    body,
                    headers,
                    mandatory=mandatory,
                    envelope=envelope,
                )
                return
        else:
            failed, was_open = None, False
        await self._publish_again(
            session,
            failed,
            was_open,
            started,
            exchange,
            routing_key,
            body,
            headers,
            properties=properties,
            mandatory=mandatory,
            envelope=envelope,
        )

    async def _publish_again(
        self,
        session: Session | None,
        failed: BaseException | None,
        was_open: bool,
        started: float,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        envelope: Envelope | None,
    ) -> None:
        """After the first attempt on ``session`` failed with ``failed`` (or found no
        session): raise what is final, else publish once the connection is back."""
        lost: BaseException | None = None
        if isinstance(failed, BrokerConnectionError):
            assert session is not None
            # Lost on the way: do not wait for the close callback to say so, or the retry
            # below would go to the same dead session.
            self.session_lost(session, failed)
            if was_open:
                lost = failed  # it may have reached the broker before the connection died
        elif isinstance(failed, PublishError):
            assert session is not None
            if not await self._restored_exchange(session, exchange, failed):
                raise failed
            # An operator deleted the exchange: declared again (with this connection's
            # bindings to it), the publish is tried once more below, not in a loop.
        elif failed is not None:
            raise failed
        await self._publish_after_recovery(
            Attempt(exchange, routing_key, started + self._publish_timeout, lost),
            body,
            headers,
            properties=properties,
            mandatory=mandatory,
            envelope=envelope,
        )

    async def publish_batch(self, items: Sequence[PublishItem]) -> list[BaseException | None]:
        """Publish ``items`` pipelined on the live session in one go (no task per message);
        what fails there takes ``publish``'s path from that failure on, each on its own."""
        started = asyncio.get_running_loop().time()
        session = self._session
        pipelined = getattr(session, "publish_pipelined", None)
        if session is None or pipelined is None or not session.is_open:
            return await asyncio.gather(
                *(
                    self.publish(
                        i.exchange,
                        i.routing_key,
                        i.body,
                        i.headers,
                        mandatory=i.mandatory,
                        envelope=i.envelope,
                    )
                    for i in items
                ),
                return_exceptions=True,
            )
        outcomes: list[BaseException | None] = await pipelined(items, self._publish_timeout)
        again = [(n, exc) for n, exc in enumerate(outcomes) if exc is not None]
        if again:
            retried = await asyncio.gather(
                *(
                    self._publish_again(
                        session,
                        exc,
                        True,
                        started,
                        items[n].exchange,
                        items[n].routing_key,
                        items[n].body,
                        items[n].headers,
                        properties=None,
                        mandatory=items[n].mandatory,
                        envelope=items[n].envelope,
                    )
                    for n, exc in again
                ),
                return_exceptions=True,
            )
            for (n, _), result in zip(again, retried, strict=True):
                outcomes[n] = result
        for outcome in outcomes:
            if outcome is not None and not isinstance(outcome, Exception):
                raise outcome  # cancellation and the like go through
        return outcomes
