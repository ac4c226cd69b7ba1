"""What happens to a message whose handler failed: retry later, or dead-letter it.

A retry republishes the message (confirmed) to ``<queue>.retry.<ms>``, a queue whose messages
expire after that delay and are dead-lettered back into ``<queue>`` through the default
exchange. The service queue keeps goamqp's arguments: all the retry machinery lives in queues of
its own. After the last attempt, or at once for a message that cannot be handled at all, the
message is published to ``<queue>.dlq`` with headers saying why, where and when. Either way the
original is acknowledged only after that publish was confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import _naming as naming
from ._errors import AmqpEventsError, ConfigurationError
from ._observe import Observers
from .transports._base import Delivery, OutgoingProperties, Transport

__all__ = ["DeadReason", "FailureRouter", "RetryPolicy"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 100
MAX_DELAY = 7 * 24 * 3600.0  # a week; RabbitMQ's TTL limit is far above


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing handler is tried, and how long to wait between tries.

    ``RetryPolicy(attempts=3, delays=(1.0, 10.0))``: the handler is called at most 3 times, the
    second call 1 s after the first failure, the third 10 s after the second; the last delay
    repeats when there are more attempts than delays. Then the message goes to ``<queue>.dlq``.
    ``attempts=1`` dead-letters at the first failure.
    """

    attempts: int = 3
    delays: Sequence[float] = (1.0, 10.0)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.attempts, int)
            or isinstance(self.attempts, bool)
            or not 1 <= self.attempts <= MAX_ATTEMPTS
        ):
            raise ConfigurationError(
                f"RetryPolicy(attempts={self.attempts!r}): attempts must be an int from 1 to "
                f"{MAX_ATTEMPTS}"
            )
        delays = tuple(self.delays)
        if self.attempts > 1 and not delays:
            raise ConfigurationError("RetryPolicy: attempts > 1 needs at least one delay")
        for delay in delays:
            if not isinstance(delay, int | float) or not 0 < delay <= MAX_DELAY:
                raise ConfigurationError(
                    f"RetryPolicy: delay {delay!r} must be a number of seconds in (0, {MAX_DELAY}]"
                )
        object.__setattr__(self, "delays", delays)

    @property
    def delays_ms(self) -> tuple[int, ...]:
        """Every delay this policy can use, in ms (the TTLs of its retry queues)."""
        used = self.delays[: max(self.attempts - 1, 0)]
        return tuple(sorted({max(1, round(d * 1000)) for d in used}))

    def delay_ms_after(self, attempt: int) -> int:
        """The delay, in ms, before attempt ``attempt + 1``."""
        delay = self.delays[min(attempt - 1, len(self.delays) - 1)]
        return max(1, round(delay * 1000))


DEFAULT_RETRY_POLICY = RetryPolicy()


class DeadReason:
    HANDLER_FAILED = "handler-failed"
    UNDECODABLE = "undecodable"
    NO_HANDLER = "no-handler"
    REJECTED = "rejected"


class FailureRouter:
    """Retries and dead-letters the messages of one queue."""

    __slots__ = ("_delays_ms", "_dlq", "_observers", "queue", "service", "transport")

    def __init__(
        self,
        queue: str,
        service: str,
        delays_ms: Sequence[int],
        observers: Observers | None = None,
    ) -> None:
        self.queue = queue
        self.service = service
        self._observers = observers or Observers()
        self._dlq = naming.dead_letter_queue(queue)
        self._delays_ms = sorted(delays_ms)
        self.transport: Transport | None = None  # set once the connection is up

    def nearest_delay_ms(self, wanted_ms: int) -> int:
        """The shortest retry queue delay that waits at least ``wanted_ms``, else the longest."""
        for delay in self._delays_ms:
            if delay >= wanted_ms:
                return delay
        return self._delays_ms[-1]

    @property
    def can_delay(self) -> bool:
        return bool(self._delays_ms)

    async def retry(self, delivery: Delivery, key: str, attempt: int, delay_ms: int) -> None:
        """Republish for another attempt after ``delay_ms``, then ack the original."""
        headers = self._carried(delivery, key)
        headers[naming.ATTEMPT_HEADER] = attempt + 1
        await self._move(delivery, naming.retry_queue(self.queue, delay_ms), headers)

    async def dead_letter(
        self,
        delivery: Delivery,
        key: str,
        attempt: int,
        reason: str,
        cause: BaseException | str | None = None,
    ) -> None:
        """Publish to ``<queue>.dlq`` with why, where and when; then ack the original.

        ``cause`` is the exception that made the message fail, or a sentence saying why.
        """
        headers = self._carried(delivery, key)
        headers[naming.ATTEMPT_HEADER] = attempt
        headers[naming.DEAD_REASON_HEADER] = reason
        headers[naming.DEAD_QUEUE_HEADER] = self.queue
        headers[naming.DEAD_SERVICE_HEADER] = self.service
        headers[naming.DEAD_AT_HEADER] = datetime.now(UTC).isoformat(timespec="milliseconds")
        if isinstance(cause, BaseException):
            headers[naming.EXCEPTION_TYPE_HEADER] = type(cause).__name__
        if cause is not None:
            headers[naming.EXCEPTION_MESSAGE_HEADER] = str(cause)[:1000]
        log.warning(
            "dead-lettering %r from %r to %r: %s (%r)", key, self.queue, self._dlq, reason, cause
        )
        if await self._move(delivery, self._dlq, headers):
            observer = self._observers.current
            if observer is not None:
                observer.dead_lettered(
                    self.service, self.queue, key, reason, str(cause or ""), delivery.body
                )

    def _carried(self, delivery: Delivery, key: str) -> dict[str, Any]:
        headers = dict(delivery.headers)
        # The first move records where the message came from; later moves keep that.
        headers.setdefault(naming.ROUTING_KEY_HEADER, key)
        headers.setdefault(naming.EXCHANGE_HEADER, delivery.exchange)
        return headers

    async def _move(self, delivery: Delivery, queue: str, headers: dict[str, Any]) -> bool:
        transport = self.transport
        try:
            if transport is None:
                raise AmqpEventsError("not connected")
            await transport.publish(
                "",
                queue,
                delivery.body,
                headers,
                properties=OutgoingProperties(
                    content_type=delivery.content_type,
                    correlation_id=delivery.correlation_id,
                    message_id=delivery.message_id,
                    reply_to=delivery.reply_to,
                ),
                mandatory=True,  # a missing retry queue or DLQ must not swallow the message
            )
        except AmqpEventsError as exc:
            # Not moved, so not acked: the broker keeps the message. The pause keeps a broker
            # that refuses every move from turning this into a hot loop.
            log.error(
                "could not move %r to %r (%s); requeueing it", delivery.routing_key, queue, exc
            )
            await asyncio.sleep(1.0)
            await delivery.reject(requeue=True)
            return False
        await delivery.ack()
        return True
