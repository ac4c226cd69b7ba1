"""Moving a message that was not handled: to a delay queue for a retry, or to the dead-letter queue.

A retry republishes the message (confirmed) to ``<queue>.retry.<ms>``, a queue whose messages
expire after that delay and are dead-lettered back into ``<queue>`` through the default
exchange. After the last attempt, or at once for a message that cannot be handled at all, the
message is published to ``<queue>.dlq`` with headers saying why, where and when. Either way the
original is acknowledged only after that publish was confirmed.

What a move carries is ours to choose: never ``CC``/``BCC`` (the broker would copy the move to
those queues) and never the broker's ``x-`` headers. Our own headers on a delivery are trusted
only when it came back through the queue's name (from a delay queue, or our own republish), so
a foreign publisher cannot steer dispatch or the attempt count.

A move that fails is tried again with backoff while the original stays unacknowledged, so the
handler does not run again; a missing delay queue or DLQ is declared again first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from . import _naming as naming
from ._errors import Unroutable
from ._inflight import InFlight
from ._instrument import DEAD_LETTERED, REQUEUED, RETRIED, moved
from ._observe import Observers
from ._retry import MAX_ATTEMPTS, DeadReason, RetryPolicy
from ._transport._base import Delivery, OutgoingProperties, Transport
from ._transport._wire import carried_headers, header_frame_size, safe_text

__all__ = ["FailureRouter"]

log = logging.getLogger(__name__)

# Backoff of a move the broker refuses; the original stays unacknowledged meanwhile.
MOVE_FIRST_WAIT = 0.5
MOVE_MAX_WAIT = 30.0
EXCEPTION_MESSAGE_MAX_BYTES = 1000
SHRUNK_MESSAGE_MAX_BYTES = 200
MAX_REDELIVERIES_CEILING = 1000
MAX_ROUTING_KEY_CHARS = 255


class FailureRouter:
    """Retries and dead-letters the messages of one queue."""

    __slots__ = (
        "_checkpoints_done",
        "_delays_ms",
        "_dlq",
        "_in_flight",
        "_observers",
        "_redeclare",
        "checkpointing",
        "queue",
        "service",
        "transport",
    )

    def __init__(
        self,
        queue: str,
        service: str,
        delays_ms: Sequence[int],
        transport: Transport,
        observers: Observers,
        *,
        in_flight: InFlight,
        redeclare: Callable[[], Awaitable[None]],
    ) -> None:
        self.queue = queue
        self.service = service
        self._observers = observers
        self._dlq = naming.dead_letter_queue(queue)
        self._delays_ms = sorted(delays_ms)
        self._in_flight = in_flight
        self._redeclare = redeclare  # declares the connection's topology again
        self.transport = transport
        # Redeliveries being counted: no handler of this queue may start until their originals'
        # acks were processed (see ``redelivered``).
        self.checkpointing = 0
        self._checkpoints_done: asyncio.Event | None = None

    def nearest_delay_ms(self, wanted_ms: int) -> int:
        """The shortest retry queue delay that waits at least ``wanted_ms``, else the longest."""
        for delay in self._delays_ms:
            if delay >= wanted_ms:
                return delay
        return self._delays_ms[-1]

    @property
    def can_delay(self) -> bool:
        return bool(self._delays_ms)

    # -- what a delivery says about itself ----------------------------------------------------

    def came_back(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` came back through this queue's name (a delay queue or one of
        our republishes): only then are our headers on it ours."""
        return delivery.routing_key == self.queue and delivery.exchange == ""

    def routing_key_of(self, delivery: Delivery) -> str:
        """The event's routing key: its own, or for a message that came back, our header."""
        if self.came_back(delivery):
            carried = delivery.headers.get(naming.ROUTING_KEY_HEADER)
            # A routing key has at most 255 bytes: a longer "key" is not one of ours (and would
            # bloat the dispatcher's key cache).
            if type(carried) is str and 0 < len(carried) <= MAX_ROUTING_KEY_CHARS:
                return carried
        return delivery.routing_key

    def attempt_of(self, delivery: Delivery) -> int:
        """How many times the handler ran before this delivery (plus one)."""
        return self._counter(delivery, naming.ATTEMPT_HEADER, 1, MAX_ATTEMPTS)

    def was_redelivered(self, delivery: Delivery) -> bool:
        """Whether the broker delivered it before: now, or before we republished it counted."""
        return delivery.redelivered or bool(
            self._counter(delivery, naming.REDELIVERIES_HEADER, 0, MAX_REDELIVERIES_CEILING)
        )

    def _counter(self, delivery: Delivery, header: str, default: int, ceiling: int) -> int:
        if not self.came_back(delivery):
            return default
        value = delivery.headers.get(header, default)
        # A hand-made message (the management UI sends strings) must not crash dispatch.
        if type(value) is not int or not default <= value <= ceiling:
            return default
        return value

    # -- moves ----------------------------------------------------------------------------------

    async def retry(
        self,
        delivery: Delivery,
        key: str,
        attempt: int,
        delay_ms: int,
        cause: BaseException | None = None,
    ) -> None:
        """Republish for another attempt after ``delay_ms``, then ack the original.

        ``cause`` is what made the attempt fail (for an instrument)."""
        headers = self._carried(delivery, key)
        headers[naming.ATTEMPT_HEADER] = attempt + 1
        retry_queue = naming.retry_queue(self.queue, delay_ms)
        if (
            await self._move(delivery, retry_queue, headers)
            and self._observers.instrument is not None
        ):
            moved(delivery, RETRIED, retry_queue, cause)

    async def redelivered(self, delivery: Delivery, key: str, policy: RetryPolicy) -> bool:
        """Count a redelivery: the consumer that had the message died without settling it.

        The count can only live in the message, so the message is republished to the back of
        its queue with the count raised (and the original acked); past the policy's
        ``max_redeliveries`` it goes to the DLQ instead. Returns True when the message was
        moved (it must not be handled now), False when it should be handled.
        """
        count = self._counter(delivery, naming.REDELIVERIES_HEADER, 0, MAX_REDELIVERIES_CEILING)
        count += 1
        attempt = self.attempt_of(delivery)
        if count > policy.max_redeliveries:
            await self.dead_letter(
                delivery,
                key,
                attempt,
                DeadReason.REDELIVERED,
                f"delivered {count} times without being settled (max_redeliveries="
                f"{policy.max_redeliveries}): its handler may be killing its process",
                redeliveries=count,
            )
            return True
        headers = self._carried(delivery, key)
        headers[naming.ATTEMPT_HEADER] = attempt
        headers[naming.REDELIVERIES_HEADER] = count
        # The copy may reach a handler that kills this process at once: the original's ack
        # must be processed by then, or both would come back and the count would restart.
        self.checkpointing += 1
        try:
            if (
                await self._move(delivery, self.queue, headers, ack_processed=True)
                and self._observers.instrument is not None
            ):
                moved(delivery, REQUEUED, "redelivered", None)
        finally:
            self.checkpointing -= 1
            if not self.checkpointing and self._checkpoints_done is not None:
                self._checkpoints_done.set()
        return True

    async def checkpoints_settled(self) -> None:
        """Wait until no redelivery of this queue is being counted."""
        while self.checkpointing:
            if self._checkpoints_done is None or self._checkpoints_done.is_set():
                self._checkpoints_done = asyncio.Event()
            await self._checkpoints_done.wait()

    async def dead_letter(
        self,
        delivery: Delivery,
        key: str,
        attempt: int,
        reason: str,
        cause: BaseException | str | None = None,
        *,
        redeliveries: int | None = None,
    ) -> None:
        """Publish to ``<queue>.dlq`` with why, where and when; then ack the original.

        ``cause`` is the exception that made the message fail, or a sentence saying why.
        """
        headers = self._carried(delivery, key)
        headers[naming.ATTEMPT_HEADER] = attempt
        if redeliveries is not None:
            headers[naming.REDELIVERIES_HEADER] = redeliveries
        headers[naming.DEAD_REASON_HEADER] = reason
        headers[naming.DEAD_QUEUE_HEADER] = self.queue
        headers[naming.DEAD_SERVICE_HEADER] = self.service
        headers[naming.DEAD_AT_HEADER] = datetime.now(UTC).isoformat(timespec="milliseconds")
        text = describe(cause)
        if isinstance(cause, BaseException):
            headers[naming.EXCEPTION_TYPE_HEADER] = safe_text(type(cause).__name__, 200)
        if cause is not None:
            headers[naming.EXCEPTION_MESSAGE_HEADER] = safe_text(text, EXCEPTION_MESSAGE_MAX_BYTES)
        log.warning(
            "dead-lettering %r from %r to %r: %s (%s)",
            key,
            self.queue,
            self._dlq,
            reason,
            safe_text(text, EXCEPTION_MESSAGE_MAX_BYTES),
        )
        if await self._move(delivery, self._dlq, headers):
            if self._observers.instrument is not None:
                moved(delivery, DEAD_LETTERED, reason, cause)
            observer = self._observers.current
            if observer is not None:
                observer.dead_lettered(
                    self.service,
                    self.queue,
                    key,
                    reason,
                    text,
                    delivery.body,
                    exception_type=type(cause) if isinstance(cause, BaseException) else None,
                    decode=self._observers.decoder(self.queue, key),
                )

    def _carried(self, delivery: Delivery, key: str) -> dict[str, Any]:
        origin = None
        if self.came_back(delivery):
            exchange = delivery.headers.get(naming.EXCHANGE_HEADER)
            origin = exchange if type(exchange) is str else None
        headers = carried_headers(delivery.headers)
        headers[naming.ROUTING_KEY_HEADER] = key
        # The first move records where the message came from; later moves keep that.
        headers[naming.EXCHANGE_HEADER] = origin if origin is not None else delivery.exchange
        return headers

    def _properties(self, delivery: Delivery) -> OutgoingProperties:
        return OutgoingProperties(
            content_type=delivery.content_type,
            correlation_id=delivery.correlation_id,
            message_id=delivery.message_id,
            reply_to=delivery.reply_to,
        )

    async def _move(
        self,
        delivery: Delivery,
        queue: str,
        headers: dict[str, Any],
        *,
        ack_processed: bool = False,
    ) -> bool:
        """Publish to ``queue`` (mandatory, confirmed), then ack the original.

        Until the broker takes the move, the original stays unacknowledged and the move is
        tried again with backoff: the handler does not run again. At shutdown the original goes
        back to its queue. Returns whether the message was moved.
        """
        properties = self._properties(delivery)
        wait = MOVE_FIRST_WAIT
        failures = 0
        while True:
            transport = self.transport
            try:
                fit_frame(headers, properties, transport.frame_max)
                await transport.publish(
                    "", queue, delivery.body, headers, properties=properties, mandatory=True
                )
            except asyncio.CancelledError:
                await delivery.reject(requeue=True)
                raise
            except Exception as exc:  # whatever the cause, the message stays ours to keep
                failures += 1
                missing = isinstance(exc, Unroutable)
                log.error(
                    "could not move %r from %r to %r (try %d): %s; the message stays "
                    "unacknowledged and is moved again%s",
                    delivery.routing_key,
                    self.queue,
                    queue,
                    failures,
                    exc,
                    " once its queues are declared again" if missing else f" in {wait:.1f}s",
                )
            else:
                await (delivery.ack_processed() if ack_processed else delivery.ack())
                return True
            if self._in_flight.stopping:  # the connection is closing: back to the queue
                await delivery.reject(requeue=True)
                return False
            try:
                if not (missing and failures == 1):
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, MOVE_MAX_WAIT)
                if missing:
                    # An operator deleted the delay queue or DLQ: declaring is idempotent.
                    await self._redeclare()
            except asyncio.CancelledError:
                await delivery.reject(requeue=True)
                raise
            except Exception as exc:
                log.error("declaring the queues of %r again failed: %s", self.queue, exc)


def describe(cause: BaseException | str | None) -> str:
    """Text for a failure's cause, even from an exception whose ``__str__`` raises."""
    if cause is None:
        return ""
    if isinstance(cause, str):
        return cause
    try:
        return str(cause)
    except Exception:
        return f"<{type(cause).__name__} whose str() failed>"


def fit_frame(headers: dict[str, Any], properties: OutgoingProperties, frame_max: int) -> None:
    """Shrink a move's headers until its content header fits ``frame_max``.

    Our exception message is cut first; then foreign headers are left out, largest first,
    and their names recorded. What the original message carried fitted, so this converges.
    """
    if header_frame_size(headers, properties) <= frame_max:
        return
    message = headers.get(naming.EXCEPTION_MESSAGE_HEADER)
    if isinstance(message, str):
        headers[naming.EXCEPTION_MESSAGE_HEADER] = safe_text(message, SHRUNK_MESSAGE_MAX_BYTES)
        if header_frame_size(headers, properties) <= frame_max:
            return
    foreign = sorted(
        (
            name
            for name in headers
            if not name.startswith(naming.HEADER_PREFIX) and name != naming.SERVICE_HEADER
        ),
        key=lambda name: header_frame_size({name: headers[name]}, None),
        reverse=True,
    )
    dropped: list[str] = []
    for name in foreign:
        del headers[name]
        dropped.append(safe_text(name, 128))
        headers[naming.DROPPED_HEADERS_HEADER] = dropped[:50]
        if header_frame_size(headers, properties) <= frame_max:
            return
