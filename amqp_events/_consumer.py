"""Dispatch: routing key -> handler, decode, call, then ack; never lose a message, never loop.

Per message this does one dict lookup (after the first message of a key), one decode, the handler
call and the ack; everything else is prepared when the connection starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from . import _naming as naming
from ._errors import (
    Ack,
    AmqpEventsError,
    ConfigurationError,
    DecodeError,
    Drop,
    Reject,
    Retry,
)
from ._handlers import ResolvedHandler, handler_name
from ._headers import Headers
from ._observe import Observers
from ._requests import PendingRequests, Responder
from ._retry import DeadReason, FailureRouter
from ._routing import is_pattern, topic_matches, topics_overlap
from .transports._base import Delivery

__all__ = ["InFlight", "QueueDispatcher", "check_overlaps"]

log = logging.getLogger(__name__)

# Keys seen on a queue are cached to skip pattern matching; a hostile publisher could send
# endless distinct keys, so the cache stops growing here and falls back to matching.
_KEY_CACHE_LIMIT = 4096


def check_overlaps(queue: str, keys_and_names: Sequence[tuple[str, str]]) -> None:
    """Raise ConfigurationError if two registrations on one queue could match the same key."""
    for i, (key_a, name_a) in enumerate(keys_and_names):
        for key_b, name_b in keys_and_names[i + 1 :]:
            if topics_overlap(key_a, key_b):
                raise ConfigurationError(
                    f"routing keys {key_a!r} ({name_a}) and {key_b!r} ({name_b}) overlap on queue "
                    f"{queue!r}: a message could match both; make the keys disjoint or use "
                    "one handler"
                )


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


async def invoke(handler: ResolvedHandler, event: Any, delivery: Delivery) -> Any:
    if handler.wants_headers:
        return await handler.handler(event, Headers(delivery.headers))
    return await handler.handler(event)


class QueueDispatcher:
    """Routes the deliveries of one queue to its handlers and settles each one exactly once.

    Returning acks. A failure is retried through a delay queue until the handler's retry policy
    runs out, then dead-lettered; a message that cannot be decoded or has no handler is
    dead-lettered at once.
    """

    __slots__ = (
        "_by_key",
        "_failures",
        "_in_flight",
        "_limit",
        "_observers",
        "_patterns",
        "_pending",
        "_responder",
        "queue",
    )

    def __init__(
        self,
        queue: str,
        handlers: Sequence[ResolvedHandler],
        in_flight: InFlight,
        failures: FailureRouter,
        *,
        responder: Responder | None = None,
        pending: PendingRequests | None = None,
        limit: asyncio.Semaphore | None = None,
        observers: Observers | None = None,
    ) -> None:
        self.queue = queue
        self._patterns = [h for h in handlers if is_pattern(h.routing_key)]
        # Exact keys up front; keys that matched a pattern join them as they are seen.
        self._by_key: dict[str, ResolvedHandler | None] = {
            h.routing_key: h for h in handlers if not is_pattern(h.routing_key)
        }
        self._in_flight = in_flight
        self._failures = failures
        self._responder = responder  # on a request queue: handlers' results are responses
        self._pending = pending  # on a response queue: awaited requests come first
        self._limit = limit  # handlers running at once, across the connection
        self._observers = observers or Observers()

    def handler_for(self, routing_key: str) -> ResolvedHandler | None:
        try:
            return self._by_key[routing_key]
        except KeyError:
            pass
        found = next((h for h in self._patterns if topic_matches(h.routing_key, routing_key)), None)
        if len(self._by_key) < _KEY_CACHE_LIMIT:
            self._by_key[routing_key] = found
        return found

    async def on_delivery(self, delivery: Delivery) -> None:
        if self._in_flight.stopping:
            await delivery.reject(requeue=True)
            return
        self._in_flight.enter()
        try:
            if self._limit is None:
                await self._dispatch(delivery)
            else:
                async with self._limit:
                    await self._dispatch(delivery)
        finally:
            self._in_flight.leave()

    async def _dispatch(self, delivery: Delivery) -> None:
        if self._pending is not None and self._pending.resolve(delivery):
            await delivery.ack()
            return
        headers = delivery.headers
        # A retried message comes back from its delay queue with the queue's name as routing
        # key; the event's own key travels in our header.
        key = headers.get(naming.ROUTING_KEY_HEADER) or delivery.routing_key
        attempt = headers.get(naming.ATTEMPT_HEADER, 1)
        handler = self.handler_for(key)
        if handler is None:
            if self._pending is not None and delivery.correlation_id is not None:
                reason = "response to a request nobody awaits any more (timed out or restarted)"
            else:
                reason = f"no handler for routing key {key!r}"
            await self._failures.dead_letter(delivery, key, attempt, DeadReason.NO_HANDLER, reason)
            return
        decode = handler.decoder_for_key(key)
        try:
            if decode is None:
                raise DecodeError(f"no event type mapped for routing key {key!r}")
            event = decode(delivery.body)
        except DecodeError as exc:
            await self._failures.dead_letter(delivery, key, attempt, DeadReason.UNDECODABLE, exc)
            return
        try:
            result = await invoke(handler, event, delivery)
        except Drop as dropped:
            log.debug("handler dropped %r from %r: %s", key, self.queue, dropped.reason)
            await delivery.ack()
            return
        except Ack:
            await self._done(delivery, key, event)
            return
        except Reject as exc:
            await self._failures.dead_letter(delivery, key, attempt, DeadReason.REJECTED, exc)
            return
        except Exception as exc:
            await self._failed(handler, delivery, key, attempt, exc)
            return
        if self._responder is not None:
            try:
                await self._responder.send(delivery, result)
            except AmqpEventsError as exc:
                await self._failures.dead_letter(
                    delivery, key, attempt, DeadReason.HANDLER_FAILED, exc
                )
                return
        await self._done(delivery, key, event)

    async def _done(self, delivery: Delivery, key: str, event: Any) -> None:
        await delivery.ack()
        observer = self._observers.current
        if observer is not None:
            observer.handled(self._failures.service, self.queue, key, event)

    async def _failed(
        self, handler: ResolvedHandler, delivery: Delivery, key: str, attempt: int, exc: Exception
    ) -> None:
        if self._responder is not None and delivery.correlation_id is not None:
            # An awaiting caller gets the error now rather than a timeout after retries.
            await self._answer_error(delivery, key, attempt, exc)
            return
        policy = handler.retry
        if attempt >= policy.attempts or not self._failures.can_delay:
            await self._failures.dead_letter(delivery, key, attempt, DeadReason.HANDLER_FAILED, exc)
            return
        if isinstance(exc, Retry) and exc.delay is not None:
            delay_ms = self._failures.nearest_delay_ms(round(exc.delay * 1000))
        else:
            delay_ms = policy.delay_ms_after(attempt)
            log.warning(
                "handler %s failed on %r (attempt %d of %d), retrying in %d ms: %r",
                handler_name(handler.handler),
                key,
                attempt,
                policy.attempts,
                delay_ms,
                exc,
            )
        await self._failures.retry(delivery, key, attempt, delay_ms)

    async def _answer_error(
        self, delivery: Delivery, key: str, attempt: int, exc: Exception
    ) -> None:
        assert self._responder is not None
        log.warning("request handler for %r raised %r; the caller gets it", key, exc)
        try:
            await self._responder.send_error(delivery, exc)
        except AmqpEventsError as send_failed:
            await self._failures.dead_letter(
                delivery, key, attempt, DeadReason.HANDLER_FAILED, send_failed
            )
            return
        await delivery.ack()
