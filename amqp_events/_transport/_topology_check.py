"""Declaring the topology again on a live connection: now and then, and when an exchange is gone.

``ReconnectingTransport`` declares everything again every ``topology_check_interval`` seconds,
and at once when a publish is refused because one of its own exchanges no longer exists (an
operator deleted it, and this connection's bindings to it with it). Declaring is idempotent.
"""

from __future__ import annotations

import asyncio
import logging

from .._errors import BrokerConnectionError, BrokerError, PublishError
from ._base import Session
from ._recovery import Recovery

__all__ = ["TopologyCheck"]

log = logging.getLogger(__name__)


class TopologyCheck(Recovery):
    """Repairs, on the live session, the topology an operator deleted under it."""

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
