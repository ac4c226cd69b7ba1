"""The retry policy: how often a handler is tried, how long apart, and how often a message may
come back unsettled. ``_failures`` carries out what it decides, through queues of their own: the
service queue keeps goamqp's arguments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = ["DEFAULT_RETRY_POLICY", "MAX_ATTEMPTS", "DeadReason", "RetryPolicy"]

MAX_ATTEMPTS = 100
MAX_REDELIVERIES = 100
MAX_DELAY = 7 * 24 * 3600.0  # a week; RabbitMQ's TTL limit is far above


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing handler is tried, and how long to wait between tries.

    ``RetryPolicy(attempts=3, delays=(1.0, 10.0))``: the handler is called at most 3 times, the
    second call 1 s after the first failure, the third 10 s after the second; the last delay
    repeats when there are more attempts than delays. Then the message goes to ``<queue>.dlq``.
    ``attempts=1`` dead-letters at the first failure.

    ``max_redeliveries`` bounds what no attempt count sees: a message whose consumer died
    before settling it (the handler killed its process, or the connection was lost) comes back
    redelivered; after that many redeliveries it goes to the DLQ with reason ``redelivered``.
    """

    attempts: int = 3
    delays: Sequence[float] = (1.0, 10.0)
    max_redeliveries: int = 5

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
        if (
            type(self.max_redeliveries) is not int
            or not 0 <= self.max_redeliveries <= MAX_REDELIVERIES
        ):
            raise ConfigurationError(
                f"RetryPolicy(max_redeliveries={self.max_redeliveries!r}): must be an int from 0 "
                f"to {MAX_REDELIVERIES}"
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
    NO_TYPE = "no-type"  # a handler matched the key, but none of its event types is mapped to it
    REJECTED = "rejected"
    REDELIVERED = "redelivered"  # came back unsettled too often: its handler may kill its process
    UNANSWERABLE = "unanswerable"  # a request without a ``service`` header naming the caller
    VERSION_TOO_NEW = "version-too-new"  # a schema version newer than the consumer's Route
