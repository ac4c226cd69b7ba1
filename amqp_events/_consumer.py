"""Dispatch: routing key -> handler, decode, call, then ack; never lose a message, never loop.

Per message this does one dict lookup (after the first message of a key), one decode, the handler
call and the ack; everything else is prepared when the connection starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ._errors import AmqpEventsError, ConfigurationError, DecodeError
from ._handlers import ResolvedHandler
from ._requests import PendingRequests, Responder
from ._retry import GaveUp, HandlerRetry, invoke
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
    """Counts running handlers so shutdown can wait for them."""

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    async def wait_idle(self) -> None:
        await self._idle.wait()


class QueueDispatcher:
    """Routes the deliveries of one queue to its handlers."""

    __slots__ = (
        "_by_key",
        "_exact",
        "_in_flight",
        "_patterns",
        "_pending",
        "_responder",
        "_retry",
        "queue",
    )

    def __init__(
        self,
        queue: str,
        handlers: Sequence[ResolvedHandler],
        in_flight: InFlight,
        retry: HandlerRetry,
        *,
        responder: Responder | None = None,
        pending: PendingRequests | None = None,
    ) -> None:
        self.queue = queue
        self._exact = {h.routing_key: h for h in handlers if not is_pattern(h.routing_key)}
        self._patterns = [h for h in handlers if is_pattern(h.routing_key)]
        self._by_key: dict[str, ResolvedHandler | None] = dict(self._exact)
        self._in_flight = in_flight
        self._retry = retry
        self._responder = responder  # on a request queue: handlers' results are responses
        self._pending = pending  # on a response queue: awaited requests come first

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
        self._in_flight.enter()
        try:
            await self._dispatch(delivery)
        finally:
            self._in_flight.leave()

    async def _dispatch(self, delivery: Delivery) -> None:
        if self._pending is not None and self._pending.resolve(delivery):
            await delivery.ack()
            return
        key = delivery.routing_key
        handler = self.handler_for(key)
        if handler is None:
            if self._pending is not None and delivery.correlation_id is not None:
                reason = "response to a request nobody awaits any more (timed out or restarted)"
            else:
                reason = f"no handler for routing key {key!r}"
            await self._reject(delivery, reason)
            return
        decode = handler.decoder_for_key(key)
        if decode is None:
            await self._reject(delivery, f"no event type mapped for routing key {key!r}")
            return
        try:
            event = decode(delivery.body)
        except DecodeError as exc:
            await self._reject(delivery, str(exc))
            return
        try:
            result = await invoke(handler, event, delivery)
        except Exception as exc:
            if self._responder is not None and delivery.correlation_id is not None:
                # An awaiting caller gets the error now rather than a timeout after retries.
                await self._answer_error(delivery, exc)
                return
            try:
                result = await self._retry.run(handler, event, delivery, exc)
            except GaveUp as gave_up:
                cause = gave_up.__cause__
                await self._reject(delivery, f"handler failed: {type(cause).__name__}: {cause}")
                return
        if self._responder is not None:
            try:
                await self._responder.send(delivery, result)
            except AmqpEventsError as exc:
                await self._reject(delivery, f"response not sent: {exc}")
                return
        await delivery.ack()

    async def _answer_error(self, delivery: Delivery, exc: Exception) -> None:
        assert self._responder is not None
        log.warning(
            "request handler for %r raised %r; the caller gets it", delivery.routing_key, exc
        )
        try:
            await self._responder.send_error(delivery, exc)
        except AmqpEventsError as send_failed:
            await self._reject(delivery, f"error response not sent: {send_failed}")
            return
        await delivery.ack()

    async def _reject(self, delivery: Delivery, reason: str) -> None:
        # Without requeue: requeueing a message that can never be handled loops forever.
        log.warning(
            "rejecting message %r from queue %r (service %r): %s",
            delivery.routing_key,
            self.queue,
            delivery.headers.get("service"),
            reason,
        )
        await delivery.reject(requeue=False)
