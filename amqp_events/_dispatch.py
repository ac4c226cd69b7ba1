"""Dispatch: routing key -> handler, decode, call, then ack; never lose a message, never loop.

Per message this does one dict lookup (after the first message of a key), one decode, the handler
call and the ack; everything else is prepared when the connection starts. Every delivery is
settled exactly once, whatever the handler raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._codec import Decoder
from ._envelope import Handling, handling
from ._errors import (
    Ack,
    AmqpEventsError,
    ConfigurationError,
    DecodeError,
    Drop,
    Reject,
    Retry,
)
from ._failures import FailureRouter, describe
from ._handlers import ResolvedHandler, Takes, handler_name
from ._headers import Headers
from ._inflight import InFlight
from ._instrument import Instrument, WatchedDelivery
from ._metadata import Metadata, metadata_of, schema_version_of
from ._observe import Observers
from ._requests import PendingRequests, Responder
from ._retry import DeadReason
from ._topics import is_pattern, topic_matches, topics_overlap
from ._transport._base import Delivery
from ._transport._wire import safe_text
from ._versions import Versions

__all__ = ["QueueDispatcher", "check_overlaps"]

log = logging.getLogger(__name__)

# Keys seen on a queue are cached to skip pattern matching; a hostile publisher could send
# endless distinct keys, so the cache stops growing here and falls back to matching.
_KEY_CACHE_LIMIT = 4096
LOGGED_TEXT_MAX_BYTES = 1000
_BUG_PAUSE = 1.0


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


async def invoke(
    handler: ResolvedHandler, event: Any, delivery: Delivery, key: str, failures: FailureRouter
) -> Any:
    takes = handler.takes
    if takes is Takes.EVENT:
        return await handler.handler(event)

    def metadata() -> Metadata:
        return metadata_of(
            delivery, key, failures.attempt_of(delivery), failures.was_redelivered(delivery)
        )

    if takes is Takes.HEADERS:
        return await handler.handler(event, Headers(delivery.headers, metadata))
    if takes is Takes.METADATA:
        return await handler.handler(event, metadata())
    return await handler.handler(event, Headers(delivery.headers, metadata), metadata())


async def _watched_invoke(
    handler: ResolvedHandler, event: Any, delivery: Delivery, key: str, failures: FailureRouter
) -> Any:
    """``invoke`` for an instrumented dispatcher, whose deliveries are ``WatchedDelivery``."""
    assert isinstance(delivery, WatchedDelivery)
    delivery.handler_ran = True
    probe = delivery.probe
    probe.handler_started()
    try:
        result = await invoke(handler, event, delivery, key, failures)
    except BaseException as exc:
        delivery.handler_error = exc
        probe.handler_finished(exc)
        raise
    probe.handler_finished(None)
    return result


def _cancelled_from_outside() -> bool:
    """Whether this task is being cancelled (shutdown deadline), as opposed to a handler that
    raised CancelledError of its own (a timeout or a cancelled inner task it let escape)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class QueueDispatcher:
    """Routes the deliveries of one queue to its handlers and settles each one exactly once.

    Returning acks. A failure is retried through a delay queue until the handler's retry policy
    runs out, then dead-lettered; a message that has no handler, no event type for its key or
    cannot be decoded is dead-lettered at once.
    """

    __slots__ = (
        "_by_key",
        "_failures",
        "_in_flight",
        "_instrument",
        "_invoke",
        "_limit",
        "_observers",
        "_patterns",
        "_pending",
        "_responder",
        "_versions",
        "queue",
    )

    def __init__(
        self,
        queue: str,
        handlers: Sequence[ResolvedHandler],
        in_flight: InFlight,
        failures: FailureRouter,
        observers: Observers,
        versions: Versions,
        *,
        responder: Responder | None = None,
        pending: PendingRequests | None = None,
        limit: asyncio.Semaphore | None = None,
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
        self._observers = observers
        self._versions = versions
        self._observers.add_decoders(queue, self._decoder_for_key)
        # Fixed at start: without an instrument, deliveries take the plain path, unchanged.
        self._instrument: Instrument | None = observers.instrument
        self._invoke = invoke if self._instrument is None else _watched_invoke

    @property
    def consumer_callback(self) -> Callable[[Delivery], Awaitable[None]]:
        """What the transport calls with each delivery of ``queue``."""
        return self.on_delivery if self._instrument is None else self._on_delivery_watched

    def handler_for(self, routing_key: str) -> ResolvedHandler | None:
        try:
            return self._by_key[routing_key]
        except KeyError:
            pass
        found = next((h for h in self._patterns if topic_matches(h.routing_key, routing_key)), None)
        if len(self._by_key) < _KEY_CACHE_LIMIT:
            self._by_key[routing_key] = found
        return found

    def _decoder_for_key(self, routing_key: str) -> Decoder | None:
        handler = self.handler_for(routing_key)
        return handler.decoder_for_key(routing_key) if handler is not None else None

    async def on_delivery(self, delivery: Delivery) -> None:
        # An awaited response never waits for a handler slot: the handler awaiting it may hold
        # the slot it would wait for.
        pending = self._pending
        if pending is not None and pending.resolve(delivery):
            await delivery.ack()
            return
        in_flight = self._in_flight
        if in_flight.stopping:
            await delivery.reject(requeue=True)
            return
        in_flight.enter()
        # What the handler (and its response) publishes carries this message's correlation, and
        # every log record about it its ids (MessageContextFilter).
        token = handling.set(Handling(delivery))
        try:
            if self._limit is None:
                await self._dispatch(delivery)
            else:
                async with self._limit:
                    if in_flight.stopping:  # waited for a slot while shutdown began
                        await delivery.reject(requeue=True)
                        return
                    await self._dispatch(delivery)
        except Exception:
            # A bug of ours must not leave the message unsettled (prefetch of them would stall
            # the consumer); back in the queue, its redelivery count bounds the loop.
            log.exception("dispatch of %r from %r failed", delivery.routing_key, self.queue)
            if not delivery.settled:
                await asyncio.sleep(_BUG_PAUSE)  # a bug that repeats must not spin
                await delivery.reject(requeue=True)
        finally:
            handling.reset(token)
            in_flight.leave()

    async def _on_delivery_watched(self, delivery: Delivery) -> None:
        """``on_delivery``, seen by the connection's instrument from arrival to settlement."""
        instrument = self._instrument
        assert instrument is not None
        failures = self._failures
        key = failures.routing_key_of(delivery)
        handler = self.handler_for(key)
        # The registered key, never the incoming one (it may carry ids): a bounded label.
        pattern = handler.routing_key if handler is not None else ""
        probe = instrument.consuming(failures.service, self.queue, pattern, key, delivery)
        watched = WatchedDelivery(delivery, probe)
        try:
            await self.on_delivery(watched)
        finally:
            probe.finished(*watched.settled_outcome())

    async def _dispatch(self, delivery: Delivery) -> None:
        failures = self._failures
        key = failures.routing_key_of(delivery)
        handler = self.handler_for(key)
        if handler is None:
            await self._unhandled(delivery, key)
            return
        if delivery.redelivered and await failures.redelivered(delivery, key, handler.retry):
            return
        if failures.checkpointing:
            await failures.checkpoints_settled()
        responder = self._responder
        if responder is not None and responder.caller_of(delivery) is None:
            await failures.dead_letter(
                delivery,
                key,
                failures.attempt_of(delivery),
                DeadReason.UNANSWERABLE,
                "request without a string 'service' header naming the caller: no response "
                "could be sent, so the handler was not run",
            )
            return
        decode = handler.decoder_for_key(key)
        if decode is None:
            await failures.dead_letter(
                delivery,
                key,
                failures.attempt_of(delivery),
                DeadReason.NO_TYPE,
                f"no event type for routing key {key!r}: handler {handler.name} for "
                f"{handler.routing_key!r} takes {handler.describe_types()}, and none of them is "
                "mapped to that key on this connection (with_type_mapping or a publisher's "
                "routes), so the handler was not run",
            )
            return
        version = schema_version_of(delivery.headers) or 1
        expected = self._versions.expected(key)
        try:
            if version == expected:
                event = decode(delivery.body)
            elif version < expected:
                event = self._versions.upcast(key, delivery.body, version, expected, decode)
            else:
                await failures.dead_letter(
                    delivery,
                    key,
                    failures.attempt_of(delivery),
                    DeadReason.VERSION_TOO_NEW,
                    f"{key!r} of schema version {version} is newer than version {expected}, "
                    "the one this service knows (its Route's version, 1 without one): deploy "
                    "the consumer's new model before its publishers send the new version",
                )
                return
        except DecodeError as exc:
            await failures.dead_letter(
                delivery, key, failures.attempt_of(delivery), DeadReason.UNDECODABLE, exc
            )
            return
        observer = self._observers.current
        if observer is not None:
            observer.received(failures.service, self.queue, key, event)
        try:
            result = await self._invoke(handler, event, delivery, key, failures)
        except Drop as dropped:
            log.debug("handler dropped %r from %r: %s", key, self.queue, dropped.reason)
            await self._tell_caller(delivery, key, dropped)
            await delivery.ack()
            return
        except Ack:
            result = None
        except Reject as exc:
            await self._tell_caller(delivery, key, exc)
            await failures.dead_letter(
                delivery, key, failures.attempt_of(delivery), DeadReason.REJECTED, exc
            )
            return
        except Exception as exc:
            await self._failed(handler, delivery, key, exc)
            return
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                # Shutdown's deadline: the message goes back to its queue unhandled.
                await delivery.reject(requeue=True)
                raise
            await self._failed(handler, delivery, key, exc)
            return
        except (KeyboardInterrupt, SystemExit):
            await delivery.reject(requeue=True)
            raise
        except BaseException as exc:  # a handler's own BaseException is a failure like any
            await self._failed(handler, delivery, key, exc)
            return
        if responder is not None:
            try:
                await responder.send(delivery, key, result)
            except AmqpEventsError as exc:
                await failures.dead_letter(
                    delivery, key, failures.attempt_of(delivery), DeadReason.HANDLER_FAILED, exc
                )
                return
        await delivery.ack()
        log.debug("%s: handled %r from %r", failures.service, key, self.queue)
        observer = self._observers.current
        if observer is not None:
            observer.handled(failures.service, self.queue, key, event)

    async def _unhandled(self, delivery: Delivery, key: str) -> None:
        if self._pending is not None and delivery.correlation_id is not None:
            # A response to a request that timed out (or to a caller that restarted): nobody
            # wants it, and keeping it would only fill a DLQ.
            log.warning(
                "rejecting a response %r on %r that nobody awaits any more (timed out or "
                "restarted); correlation id %s",
                key,
                self.queue,
                delivery.correlation_id,
            )
            await delivery.reject(requeue=False)
            return
        await self._failures.dead_letter(
            delivery,
            key,
            self._failures.attempt_of(delivery),
            DeadReason.NO_HANDLER,
            f"no handler for routing key {key!r}",
        )

    async def _tell_caller(self, delivery: Delivery, key: str, exc: BaseException) -> None:
        """An awaiting caller learns at once that its request will not be answered."""
        if self._responder is None or delivery.correlation_id is None:
            return
        try:
            await self._responder.send_error(delivery, key, exc)
        except AmqpEventsError as failed:
            log.warning("could not tell the caller of %r: %s", key, failed)

    async def _failed(
        self, handler: ResolvedHandler, delivery: Delivery, key: str, exc: BaseException
    ) -> None:
        failures = self._failures
        attempt = failures.attempt_of(delivery)
        if self._responder is not None and delivery.correlation_id is not None:
            # An awaiting caller gets the error now rather than a timeout after retries.
            await self._answer_error(delivery, key, attempt, exc)
            return
        policy = handler.retry
        if attempt >= policy.attempts or not failures.can_delay:
            await failures.dead_letter(delivery, key, attempt, DeadReason.HANDLER_FAILED, exc)
            return
        if isinstance(exc, Retry) and exc.delay is not None:
            delay_ms = failures.nearest_delay_ms(round(exc.delay * 1000))
        else:
            delay_ms = policy.delay_ms_after(attempt)
            log.warning(
                "handler %s failed on %r (attempt %d of %d), retrying in %d ms: %s: %s",
                handler_name(handler.handler),
                key,
                attempt,
                policy.attempts,
                delay_ms,
                type(exc).__name__,
                safe_text(describe(exc), LOGGED_TEXT_MAX_BYTES),
            )
        await failures.retry(delivery, key, attempt, delay_ms, exc)

    async def _answer_error(
        self, delivery: Delivery, key: str, attempt: int, exc: BaseException
    ) -> None:
        assert self._responder is not None
        log.warning(
            "request handler for %r raised %s: %s; the caller gets it",
            key,
            type(exc).__name__,
            safe_text(describe(exc), LOGGED_TEXT_MAX_BYTES),
        )
        try:
            await self._responder.send_error(delivery, key, exc)
        except AmqpEventsError as send_failed:
            await self._failures.dead_letter(
                delivery, key, attempt, DeadReason.HANDLER_FAILED, send_failed
            )
            return
        await delivery.ack()
