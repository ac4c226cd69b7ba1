"""The instrumentation seam: what metrics and tracing see of a connection, cost-free when unused.

A connection has at most one ``Instrument`` (several set up are fanned out by ``combine``),
in ``Observers.instrument``; it is fixed when the connection starts. Without one:

- a publish does one ``is None`` check (``Publisher.publish``, ``request``, responses);
- a delivery does none: the dispatcher picks its instrumented callback and handler call when it
  is made (``QueueDispatcher.consumer_callback``);
- a move (retry, dead letter, counted redelivery) does one ``is None`` check.

With one, each publish gets a ``PublishProbe`` (``publishing``: before the message is sent, so
it may add headers to the ``Envelope``, e.g. ``traceparent``; ``finished`` with the outcome) and
each delivery a ``ConsumeProbe`` (``consuming``: before anything else happens to the delivery;
``handler_started``/``handler_finished`` around the handler; ``moved`` for a retry or dead
letter; ``finished`` with the outcome once the delivery is settled). The dispatcher hands its
handlers and moves a ``WatchedDelivery``, which records how the delivery was settled and
carries its probe, so a move made deep in ``_failures`` reaches the probe through the delivery.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

from ._envelope import Envelope
from ._errors import Ack, Drop, PublishError, PublishOutcomeUnknown, Unroutable
from ._transport._base import Delivery, OutgoingProperties, Transport

__all__ = [
    "CONSUMED_OUTCOMES",
    "PUBLISH_OUTCOMES",
    "ConsumeProbe",
    "Instrument",
    "PublishProbe",
    "WatchedDelivery",
    "combine",
    "moved",
    "publish_outcome",
    "publish_with",
]

# What became of a publish.
CONFIRMED: Final = "confirmed"  # the broker confirmed it
NACKED: Final = "nacked"  # refused by the broker, or never sent: the broker does not have it
RETURNED: Final = "returned"  # mandatory, and no queue was bound (Unroutable)
TIMEOUT: Final = "timeout"  # no confirm in time, or the connection died first (unknown)
FAILED: Final = "failed"  # anything else: cancelled, a bug
PUBLISH_OUTCOMES: Final = (CONFIRMED, NACKED, RETURNED, TIMEOUT, FAILED)

# What became of a delivery.
ACKED: Final = "acked"  # the handler returned (or raised Ack): acknowledged
DROPPED: Final = "dropped"  # the handler raised Drop: acknowledged, not dead-lettered
RETRIED: Final = "retried"  # moved to a delay queue for another attempt
DEAD_LETTERED: Final = "dead_lettered"  # moved to the DLQ; the reason says why
ANSWERED_ERROR: Final = "answered_error"  # a request handler failed; its caller was told; acked
RESPONSE: Final = "response"  # a response an awaiting request() took
REJECTED: Final = "rejected"  # a response nobody awaits any more: rejected, not requeued
REQUEUED: Final = "requeued"  # back in its queue unhandled (shutdown, or a counted redelivery)
CONSUMED_OUTCOMES: Final = (
    ACKED,
    DROPPED,
    RETRIED,
    DEAD_LETTERED,
    ANSWERED_ERROR,
    RESPONSE,
    REJECTED,
    REQUEUED,
)


class PublishProbe(Protocol):
    def finished(self, outcome: str, exc: BaseException | None) -> None:
        """The publish ended: ``outcome`` is one of ``PUBLISH_OUTCOMES``."""


class ConsumeProbe(Protocol):
    def handler_started(self) -> None:
        """The handler is about to run."""

    def handler_finished(self, exc: BaseException | None) -> None:
        """The handler returned (None) or raised ``exc``."""

    def moved(self, outcome: str, reason: str, cause: BaseException | str | None) -> None:
        """The delivery was moved: ``RETRIED`` (reason: the delay queue), ``DEAD_LETTERED``
        (reason: the dead-letter reason) or ``REQUEUED`` (a counted redelivery)."""

    def finished(self, outcome: str, reason: str) -> None:
        """The delivery is settled: ``outcome`` is one of ``CONSUMED_OUTCOMES``."""


class Instrument(Protocol):
    def publishing(
        self, service: str, exchange: str, routing_key: str, envelope: Envelope | None, size: int
    ) -> PublishProbe:
        """A message is about to be published; ``envelope.headers`` may be replaced by a
        copy with more headers (they are merged over the publish's headers)."""

    def consuming(
        self, service: str, queue: str, pattern: str, routing_key: str, delivery: Delivery
    ) -> ConsumeProbe:
        """A delivery arrived on ``queue``; ``pattern`` is the registered routing key of the
        handler its key reaches (``""`` when none does), ``routing_key`` the event's own."""

    def connection_lost(self, service: str) -> None:
        """The connection was lost; it is being re-established."""

    def deferred(self, headers: Mapping[str, Any]) -> Mapping[str, Any]:
        """A message is stored now, to be published later (the outbox): the headers it is to
        carry, with what the instrument takes along from the time of writing (the current
        trace context, the parent of its publish span); ``headers`` is not changed."""

    def pending_requests(self, service: str, target: str, delta: int) -> None:
        """Requests awaited from ``target`` went up or down by ``delta``."""


def publish_outcome(exc: BaseException) -> str:
    if isinstance(exc, Unroutable):
        return RETURNED
    if isinstance(exc, PublishOutcomeUnknown):
        return TIMEOUT
    if isinstance(exc, PublishError):
        return NACKED
    return FAILED


async def publish_with(
    instrument: Instrument,
    transport: Transport,
    service: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    properties: OutgoingProperties | None = None,
    mandatory: bool,
    envelope: Envelope,
) -> None:
    """``transport.publish`` seen by ``instrument``: the instrumented side of every publish."""
    probe = instrument.publishing(service, exchange, routing_key, envelope, len(body))
    try:
        await transport.publish(
            exchange,
            routing_key,
            body,
            headers,
            properties=properties,
            mandatory=mandatory,
            envelope=envelope,
        )
    except BaseException as exc:
        probe.finished(publish_outcome(exc), exc)
        raise
    probe.finished(CONFIRMED, None)


def moved(delivery: Delivery, outcome: str, reason: str, cause: BaseException | str | None) -> None:
    """A move of ``delivery`` was confirmed (and the original acked)."""
    if isinstance(delivery, WatchedDelivery):
        delivery.outcome = outcome
        delivery.reason = reason
        delivery.probe.moved(outcome, reason, cause)


class WatchedDelivery(Delivery):
    """A delivery whose settlement is recorded, for an instrumented dispatcher."""

    __slots__ = (
        "acked",
        "handler_error",
        "handler_ran",
        "inner",
        "outcome",
        "probe",
        "reason",
        "requeued",
    )

    def __init__(self, inner: Delivery, probe: ConsumeProbe) -> None:
        super().__init__(
            inner.body,
            inner.routing_key,
            inner.exchange,
            inner.headers,
            inner.redelivered,
            inner.content_type,
            inner.message_id,
            inner.correlation_id,
            inner.reply_to,
            inner.timestamp,
        )
        self.inner = inner
        self.probe = probe
        self.acked = False
        self.requeued = False
        self.handler_ran = False
        self.handler_error: BaseException | None = None
        self.outcome: str | None = None  # set by a move
        self.reason = ""

    def settled_outcome(self) -> tuple[str, str]:
        """What became of it, and why (a dead letter's reason), once dispatch is over."""
        if self.outcome is not None:
            return self.outcome, self.reason
        if self.acked:
            if not self.handler_ran:
                return RESPONSE, ""  # the only ack without a handler: an awaited response
            error = self.handler_error
            if error is None or isinstance(error, Ack):
                return ACKED, ""
            if isinstance(error, Drop):
                return DROPPED, ""
            return ANSWERED_ERROR, ""
        if self.settled and not self.requeued:
            return REJECTED, ""
        # Requeued, or left unsettled (its channel is gone: the broker requeues it).
        return REQUEUED, ""

    async def ack(self) -> None:
        self.settled = self.acked = True
        await self.inner.ack()

    async def reject(self, *, requeue: bool) -> None:
        self.settled = True
        self.requeued = requeue
        await self.inner.reject(requeue=requeue)

    async def ack_processed(self) -> None:
        self.settled = self.acked = True
        await self.inner.ack_processed()


class Timer:
    """Seconds since it was made, from the monotonic clock."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def combine(instruments: list[Instrument]) -> Instrument | None:
    """One instrument for several (or None for none)."""
    if not instruments:
        return None
    if len(instruments) == 1:
        return instruments[0]
    return _Fanout(instruments)


class _Fanout:
    __slots__ = ("_instruments",)

    def __init__(self, instruments: list[Instrument]) -> None:
        self._instruments = instruments

    def publishing(
        self, service: str, exchange: str, routing_key: str, envelope: Envelope | None, size: int
    ) -> PublishProbe:
        return _PublishFanout(
            [
                i.publishing(service, exchange, routing_key, envelope, size)
                for i in self._instruments
            ]
        )

    def consuming(
        self, service: str, queue: str, pattern: str, routing_key: str, delivery: Delivery
    ) -> ConsumeProbe:
        return _ConsumeFanout(
            [i.consuming(service, queue, pattern, routing_key, delivery) for i in self._instruments]
        )

    def connection_lost(self, service: str) -> None:
        for i in self._instruments:
            i.connection_lost(service)

    def deferred(self, headers: Mapping[str, Any]) -> Mapping[str, Any]:
        for i in self._instruments:
            headers = i.deferred(headers)
        return headers

    def pending_requests(self, service: str, target: str, delta: int) -> None:
        for i in self._instruments:
            i.pending_requests(service, target, delta)


class _PublishFanout:
    __slots__ = ("_probes",)

    def __init__(self, probes: list[PublishProbe]) -> None:
        self._probes = probes

    def finished(self, outcome: str, exc: BaseException | None) -> None:
        for p in self._probes:
            p.finished(outcome, exc)


class _ConsumeFanout:
    __slots__ = ("_probes",)

    def __init__(self, probes: list[ConsumeProbe]) -> None:
        self._probes = probes

    def handler_started(self) -> None:
        for p in self._probes:
            p.handler_started()

    def handler_finished(self, exc: BaseException | None) -> None:
        for p in self._probes:
            p.handler_finished(exc)

    def moved(self, outcome: str, reason: str, cause: BaseException | str | None) -> None:
        for p in self._probes:
            p.moved(outcome, reason, cause)

    def finished(self, outcome: str, reason: str) -> None:
        for p in self._probes:
            p.finished(outcome, reason)
