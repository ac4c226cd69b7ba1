"""Bounded retries of a failing handler.

For now a failing handler is retried in place, a bounded number of times with a short backoff,
and the message is then rejected without requeue. A plain requeue (goamqp's default) would loop a
poison message forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from ._handlers import ResolvedHandler, handler_name
from ._headers import Headers
from .transports._base import Delivery

__all__ = ["GaveUp", "HandlerRetry", "invoke"]

log = logging.getLogger(__name__)


async def invoke(handler: ResolvedHandler, event: Any, delivery: Delivery) -> Any:
    if handler.wants_headers:
        return await handler.handler(event, Headers(delivery.headers))
    return await handler.handler(event)


class GaveUp(Exception):
    """Every attempt failed; ``__cause__`` is the last error."""


class HandlerRetry:
    """Retries a failed handler call up to ``attempts`` calls in all, with exponential backoff."""

    __slots__ = ("attempts", "max_wait", "min_wait")

    def __init__(self, attempts: int = 3, *, min_wait: float = 0.05, max_wait: float = 1.0):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.min_wait = min_wait
        self.max_wait = max_wait

    async def run(
        self, handler: ResolvedHandler, event: Any, delivery: Delivery, first: Exception
    ) -> Any:
        """Retry after the first failure; the handler's result, or GaveUp."""
        name = handler_name(handler.handler)
        log.warning(
            "handler %s failed on %r (attempt 1 of %d): %r",
            name,
            delivery.routing_key,
            self.attempts,
            first,
        )
        if self.attempts == 1:
            raise GaveUp from first
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts - 1),
            wait=wait_exponential(multiplier=self.min_wait, min=self.min_wait, max=self.max_wait),
            reraise=True,
        )
        await asyncio.sleep(self.min_wait)  # tenacity does not wait before its own first call
        try:
            async for attempt in retrying:
                with attempt:
                    await invoke(handler, event, delivery)
        except Exception as exc:
            log.error(
                "handler %s failed on %r %d times, giving up: %r",
                name,
                delivery.routing_key,
                self.attempts,
                exc,
            )
            return False
        return True
