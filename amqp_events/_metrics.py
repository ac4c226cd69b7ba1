"""Prometheus metrics of a connection (``with_prometheus``): an ``Instrument`` that counts.

Imported only by ``with_prometheus`` (prometheus-client is an optional extra). The metric
families are made once per registry and shared by every connection that reports to it, so
several connections in one process (or one test) never register a name twice. Labels stay
bounded: the service, the exchange or queue, the handler's registered routing key (never the
incoming key, which may carry ids), the outcome, the dead-letter reason, the exception class.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ._envelope import Envelope
from ._errors import Ack, Drop
from ._instrument import CONFIRMED, DEAD_LETTERED, Timer
from ._transport._base import Delivery

__all__ = [
    "CONFIRM_BUCKETS",
    "HANDLER_BUCKETS",
    "MetricsInstrument",
    "OutboxGauges",
    "families_for",
    "outbox_gauges_for",
]

# Seconds. A confirm takes a millisecond or so on a healthy broker; a reconnection, seconds.
CONFIRM_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
# Handlers range from a dict update to a remote call.
HANDLER_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


class Families:
    """The metric families of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.published = Counter(
            "amqp_events_published",
            "Messages published, by outcome: confirmed, nacked (refused or never sent), "
            "returned (mandatory, unroutable), timeout (no confirm in time: outcome unknown), "
            "failed (cancelled, or another error).",
            ["service", "exchange", "outcome"],
            registry=registry,
        )
        self.consumed = Counter(
            "amqp_events_consumed",
            "Deliveries settled, by outcome: acked, dropped, retried, dead_lettered (reason "
            "says why), answered_error, response, rejected, requeued.",
            ["service", "queue", "pattern", "outcome", "reason"],
            registry=registry,
        )
        self.handler_errors = Counter(
            "amqp_events_handler_errors",
            "Handler runs that raised, by exception class (Ack and Drop are not errors).",
            ["service", "queue", "pattern", "exception"],
            registry=registry,
        )
        self.handler_duration = Histogram(
            "amqp_events_handler_duration_seconds",
            "How long handlers ran, whatever they returned or raised.",
            ["service", "queue", "pattern"],
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )
        self.publish_confirm = Histogram(
            "amqp_events_publish_confirm_seconds",
            "From a publish to the broker's confirm (a reconnection included), for confirmed "
            "publishes.",
            ["service", "exchange"],
            buckets=CONFIRM_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "amqp_events_handlers_in_flight",
            "Handlers running now.",
            ["service", "queue"],
            registry=registry,
        )
        self.reconnects = Counter(
            "amqp_events_reconnects",
            "Connections lost; each starts a reconnection.",
            ["service"],
            registry=registry,
        )
        self.pending_requests = Gauge(
            "amqp_events_pending_requests",
            "Requests awaiting their response (publisher.request).",
            ["service", "target"],
            registry=registry,
        )


_families: weakref.WeakKeyDictionary[CollectorRegistry, Families] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def families_for(registry: CollectorRegistry | None) -> Families:
    """The families of ``registry`` (prometheus_client's default one for None), made once."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        found = _families.get(registry)
        if found is None:
            found = _families[registry] = Families(registry)
        return found


class OutboxGauges:
    """The outbox relay's gauges in one registry, made by the first relay that reports there
    (a registry without a relay never shows them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending_rows = Gauge(
            "amqp_events_outbox_pending_rows",
            "Outbox rows written and not yet sent, as the relay last counted them.",
            ["service", "table"],
            registry=registry,
        )
        self.blocked_partitions = Gauge(
            "amqp_events_outbox_blocked_partitions",
            "Outbox partitions held back by an event that failed to publish (retried with "
            "backoff; the later events of the partition wait).",
            ["service", "table"],
            registry=registry,
        )


_outbox_gauges: weakref.WeakKeyDictionary[CollectorRegistry, OutboxGauges] = (
    weakref.WeakKeyDictionary()
)


def outbox_gauges_for(registry: CollectorRegistry) -> OutboxGauges:
    """The outbox gauges of ``registry``, made once."""
    with _lock:
        found = _outbox_gauges.get(registry)
        if found is None:
            found = _outbox_gauges[registry] = OutboxGauges(registry)
        return found


class MetricsInstrument:
    """Counts what one connection publishes and consumes."""

    __slots__ = ("_confirm", "_consumed", "_families", "_handler", "_published")

    def __init__(self, families: Families) -> None:
        self._families = families
        # Label children by their label values: one dict lookup per message after the first.
        self._published: dict[tuple[str, str, str], Counter] = {}
        self._confirm: dict[tuple[str, str], Histogram] = {}
        self._consumed: dict[tuple[str, str, str, str, str], Counter] = {}
        self._handler: dict[tuple[str, str, str], _HandlerChildren] = {}

    def publishing(
        self, service: str, exchange: str, routing_key: str, envelope: Envelope | None, size: int
    ) -> _PublishCount:
        return _PublishCount(self, service, exchange)

    def consuming(
        self, service: str, queue: str, pattern: str, routing_key: str, delivery: Delivery
    ) -> _ConsumeCount:
        return _ConsumeCount(self, service, queue, pattern)

    def connection_lost(self, service: str) -> None:
        self._families.reconnects.labels(service).inc()

    def deferred(self, headers: Mapping[str, Any]) -> Mapping[str, Any]:
        return headers  # counted when the relay publishes it

    def pending_requests(self, service: str, target: str, delta: int) -> None:
        self._families.pending_requests.labels(service, target).inc(delta)

    def published(self, labels: tuple[str, str, str]) -> Counter:
        child = self._published.get(labels)
        if child is None:
            child = self._published[labels] = self._families.published.labels(*labels)
        return child

    def confirm(self, labels: tuple[str, str]) -> Histogram:
        child = self._confirm.get(labels)
        if child is None:
            child = self._confirm[labels] = self._families.publish_confirm.labels(*labels)
        return child

    def consumed(self, labels: tuple[str, str, str, str, str]) -> Counter:
        child = self._consumed.get(labels)
        if child is None:
            child = self._consumed[labels] = self._families.consumed.labels(*labels)
        return child

    def handler(self, service: str, queue: str, pattern: str) -> _HandlerChildren:
        labels = (service, queue, pattern)
        child = self._handler.get(labels)
        if child is None:
            families = self._families
            child = self._handler[labels] = _HandlerChildren(
                families.handler_duration.labels(*labels),
                families.in_flight.labels(service, queue),
            )
        return child

    def handler_error(self, service: str, queue: str, pattern: str, exception: str) -> None:
        self._families.handler_errors.labels(service, queue, pattern, exception).inc()


class _HandlerChildren:
    __slots__ = ("duration", "in_flight")

    def __init__(self, duration: Histogram, in_flight: Gauge) -> None:
        self.duration = duration
        self.in_flight = in_flight


class _PublishCount:
    __slots__ = ("_exchange", "_metrics", "_service", "_timer")

    def __init__(self, metrics: MetricsInstrument, service: str, exchange: str) -> None:
        self._metrics = metrics
        self._service = service
        self._exchange = exchange
        self._timer = Timer()

    def finished(self, outcome: str, exc: BaseException | None) -> None:
        metrics = self._metrics
        metrics.published((self._service, self._exchange, outcome)).inc()
        if outcome == CONFIRMED:
            metrics.confirm((self._service, self._exchange)).observe(self._timer.elapsed())


class _ConsumeCount:
    __slots__ = ("_handler", "_metrics", "_pattern", "_queue", "_service", "_timer")

    def __init__(self, metrics: MetricsInstrument, service: str, queue: str, pattern: str) -> None:
        self._metrics = metrics
        self._service = service
        self._queue = queue
        self._pattern = pattern
        self._handler: _HandlerChildren | None = None
        self._timer: Timer | None = None

    def handler_started(self) -> None:
        self._handler = handler = self._metrics.handler(self._service, self._queue, self._pattern)
        handler.in_flight.inc()
        self._timer = Timer()

    def handler_finished(self, exc: BaseException | None) -> None:
        handler, timer = self._handler, self._timer
        if handler is not None and timer is not None:
            handler.duration.observe(timer.elapsed())
            handler.in_flight.dec()
        if exc is not None and not isinstance(exc, Ack | Drop):
            self._metrics.handler_error(
                self._service, self._queue, self._pattern, type(exc).__name__
            )

    def moved(self, outcome: str, reason: str, cause: BaseException | str | None) -> None:
        pass  # counted once settled, in finished

    def finished(self, outcome: str, reason: str) -> None:
        self._metrics.consumed(
            (
                self._service,
                self._queue,
                self._pattern,
                outcome,
                reason if outcome == DEAD_LETTERED else "",
            )
        ).inc()
