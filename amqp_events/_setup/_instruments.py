"""Setups for metrics and tracing (optional extras): ``with_prometheus``, ``with_tracing``; and
``serve_metrics``, an HTTP endpoint for Prometheus to scrape.

Neither prometheus-client nor opentelemetry is imported until one of these is called. A setup
records an instrument factory for the plan; ``Connection.start`` makes the connection's
instrument from them (``instrument_for``) before its dispatchers, so a connection without one
takes the uninstrumented paths.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from .._instrument import Instrument, combine
from .._version import VERSION
from ._builder import Setup, SetupBuilder, SetupPlan

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

__all__ = [
    "instrument_for",
    "prometheus_registry_for",
    "serve_metrics",
    "with_prometheus",
    "with_tracing",
]

# The connection's service and broker URLs -> its instrument.
InstrumentFactory = Callable[[str, Sequence[str]], Instrument]

_planned: weakref.WeakKeyDictionary[SetupPlan, list[tuple[str, InstrumentFactory]]] = (
    weakref.WeakKeyDictionary()
)


def _record(builder: SetupBuilder, what: str, factory: InstrumentFactory) -> None:
    factories = _planned.setdefault(builder._plan, [])
    if any(name == what for name, _ in factories):
        raise ConfigurationError(f"{what}() is set up twice on one connection; set it up once")
    factories.append((what, factory))


# The registry ``with_prometheus`` reports to, per plan: for setups that keep gauges of their
# own (the outbox relay), looked up once the connection starts.
_registries: weakref.WeakKeyDictionary[SetupPlan, CollectorRegistry] = weakref.WeakKeyDictionary()


def prometheus_registry_for(plan: SetupPlan) -> CollectorRegistry | None:
    """The registry of the plan's ``with_prometheus`` (None without one)."""
    return _registries.get(plan)


def instrument_for(plan: SetupPlan, service: str, urls: Sequence[str]) -> Instrument | None:
    """The instrument of a connection started with ``plan`` (None without metrics/tracing)."""
    return combine([make(service, urls) for _, make in _planned.get(plan, [])])


def _missing(what: str, extra: str, package: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} needs {package}, which is not installed: pip install 'amqp-events[{extra}]'"
    )


def with_prometheus(registry: CollectorRegistry | None = None) -> Setup:
    """Count what this connection publishes and consumes, as Prometheus metrics in
    ``registry`` (prometheus_client's default ``REGISTRY`` when None). Needs the ``metrics``
    extra: ``pip install 'amqp-events[metrics]'``.

    The metrics (labels in braces; every one also has ``service``):

    - ``amqp_events_published_total{exchange,outcome}``: outcome ``confirmed``, ``nacked``
      (refused or never sent), ``returned`` (unroutable), ``timeout`` (outcome unknown),
      ``failed``;
    - ``amqp_events_consumed_total{queue,pattern,outcome,reason}``: outcome ``acked``,
      ``dropped``, ``retried``, ``dead_lettered`` (``reason``: the dead-letter reason),
      ``answered_error``, ``response``, ``rejected``, ``requeued``;
    - ``amqp_events_handler_duration_seconds{queue,pattern}`` (histogram),
      ``amqp_events_handler_errors_total{queue,pattern,exception}``,
      ``amqp_events_handlers_in_flight{queue}``;
    - ``amqp_events_publish_confirm_seconds{exchange}`` (histogram);
    - ``amqp_events_reconnects_total``, ``amqp_events_pending_requests{target}``.

    ``pattern`` is the handler's registered routing key, never the incoming one. Connections
    may share a registry. ``serve_metrics(port)`` serves it over HTTP. Without this setup, a
    message costs nothing more.
    """
    try:
        from prometheus_client import CollectorRegistry

        from .._metrics import MetricsInstrument, families_for
    except ImportError as exc:
        raise _missing("with_prometheus", "metrics", "prometheus-client") from exc
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise ConfigurationError(
            f"with_prometheus takes a prometheus_client CollectorRegistry, got {registry!r}"
        )
    families = families_for(registry)

    def make(service: str, urls: Sequence[str]) -> Instrument:
        return MetricsInstrument(families)

    def apply(builder: SetupBuilder) -> None:
        _record(builder, "with_prometheus", make)
        _registries[builder._plan] = families.registry

    return apply


def with_tracing(tracer_provider: TracerProvider | None = None) -> Setup:
    """Trace what this connection publishes and consumes with OpenTelemetry, through
    ``tracer_provider`` (the global one when None). Needs the ``tracing`` extra:
    ``pip install 'amqp-events[tracing]'``.

    A publish makes a PRODUCER span ``publish <exchange>:<routing key>`` and carries its
    context in the message's headers (``traceparent``, ``tracestate``, ``baggage``, through
    the global propagator); a delivery makes a CONSUMER span
    ``process <exchange>:<registered key>:<queue>``, the child of the context the message
    carries, current while its handler runs. Attributes follow OpenTelemetry's messaging
    conventions for RabbitMQ (``messaging.system``, ``messaging.destination.name``,
    ``messaging.rabbitmq.destination.routing_key``, ``messaging.message.id``,
    ``messaging.message.conversation_id`` ...); a retry or dead letter is an event on the
    span, the handler's exception is recorded. Never a payload. See docs/observability.md.
    """
    try:
        from opentelemetry import trace

        from .._tracing import TracingInstrument
    except ImportError as exc:
        raise _missing("with_tracing", "tracing", "opentelemetry-api") from exc
    tracer = trace.get_tracer("amqp_events", VERSION, tracer_provider)

    def make(service: str, urls: Sequence[str]) -> Instrument:
        return TracingInstrument(tracer, _server(urls))

    def apply(builder: SetupBuilder) -> None:
        _record(builder, "with_tracing", make)

    return apply


def _server(urls: Sequence[str]) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of the first broker (none for ``memory://``)."""
    if not urls:
        return {}
    parts = urlsplit(urls[0].split(",")[0])
    if parts.scheme not in ("amqp", "amqps"):
        return {}
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return {}
    server: dict[str, Any] = {}
    if host:
        server["server.address"] = host
        server["server.port"] = port or (5671 if parts.scheme == "amqps" else 5672)
    return server


def serve_metrics(
    port: int, *, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None
) -> Any:
    """Serve ``registry`` (prometheus_client's default for None) for Prometheus to scrape,
    at ``http://<addr>:<port>/metrics``, from a daemon thread: for a service that has no
    HTTP server of its own. Returns the server; ``.shutdown()`` stops it. Needs the
    ``metrics`` extra."""
    try:
        from prometheus_client import REGISTRY, start_http_server
    except ImportError as exc:
        raise _missing("serve_metrics", "metrics", "prometheus-client") from exc
    server, _ = start_http_server(port, addr, REGISTRY if registry is None else registry)
    return server
