"""Publishes held across reconnections, and the guard against a poison publish.

A publish whose connection is down waits for the next one, up to ``publish_timeout``, then raises
``PublishError``; close() ends that wait at once. A publish handed to a connection that died
before its confirm may have been stored: if no later attempt is confirmed, it fails with
``PublishOutcomeUnknown``, never with a plain ``PublishError``, which means the broker does not
have it. A publish under which ``MAX_LOSSES_PER_PUBLISH`` connections died gives up: the broker
may be closing them because of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .._envelope import Envelope
from .._errors import BrokerConnectionError, PublishError, PublishOutcomeUnknown
from ._base import OutgoingProperties
from ._recovery import Recovery

__all__ = ["MAX_LOSSES_PER_PUBLISH", "Attempt", "HeldPublishes"]

# Connections that may die under one publish before it gives up (a poison publish).
MAX_LOSSES_PER_PUBLISH = 3


class Attempt:
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


class HeldPublishes(Recovery):
    """Publishes that wait for a reconnection, each until its deadline."""

    _publish_timeout: float  # set by ReconnectingTransport

    async def _publish_after_recovery(
        self,
        attempt: Attempt,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        envelope: Envelope | None,
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
                    envelope=envelope,
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

    def _why_unavailable(self) -> str:
        if self._failed is not None:
            return f"gave up reconnecting: {self._failed}"
        return "the connection is closed (close() was called)"
