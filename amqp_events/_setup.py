"""Setup functions, each a goamqp counterpart, and the builder they fill in.

A setup only records what to declare and consume; ``Connection.start`` applies every setup to a
builder, checks the whole result, and only then touches the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from . import _naming as naming
from ._consumer import check_overlaps
from ._errors import ConfigurationError
from ._handlers import Handler, HandlerSpec, check_handler, handler_name
from ._publisher import Publisher
from ._routing import Route, TypeMapping, validate_routing_key
from ._topology import BindingSpec, ExchangeSpec, QueueSpec, Topology
from .transports._base import CloseCallback

__all__ = [
    "Setup",
    "SetupBuilder",
    "close_listener",
    "event_stream_consumer",
    "event_stream_publisher",
    "transient_event_stream_consumer",
    "with_prefetch_limit",
    "with_type_mapping",
]

MAX_PREFETCH = 65535  # AMQP's prefetch-count is a 16-bit field


@dataclass(slots=True)
class QueueConsumers:
    """The handlers registered on one queue."""

    queue: str
    handlers: list[HandlerSpec] = field(default_factory=list)


class SetupBuilder:
    """Collects what the setups of one ``Connection.start`` ask for."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.topology = Topology()
        self.consumers: dict[str, QueueConsumers] = {}
        self.publishers: list[tuple[Publisher, str]] = []
        self.type_mapping = TypeMapping()
        self.prefetch = naming.DEFAULT_PREFETCH
        self.close_listeners: list[CloseCallback] = []

    def add_handler(self, queue: str, spec: HandlerSpec) -> None:
        consumers = self.consumers.setdefault(queue, QueueConsumers(queue))
        consumers.handlers.append(spec)
        check_overlaps(
            queue, [(h.routing_key, handler_name(h.handler)) for h in consumers.handlers]
        )

    def add_publisher(self, publisher: Publisher, exchange: str) -> None:
        if any(known is publisher for known, _ in self.publishers):
            raise ConfigurationError(
                f"publisher with routes {publisher._describe_routes()} is set up twice"
            )
        self.publishers.append((publisher, exchange))
        self.type_mapping.merge(publisher.type_mapping)


Setup: TypeAlias = Callable[[SetupBuilder], None]


def _declare_event_stream(builder: SetupBuilder, exchange: str) -> None:
    builder.topology.add_exchange(ExchangeSpec(exchange, naming.TOPIC))


def event_stream_publisher(
    publisher: Publisher, exchange: str = naming.DEFAULT_EVENT_EXCHANGE
) -> Setup:
    """Publish ``publisher``'s events to the topic exchange (default ``events.topic.exchange``)."""
    _check_publisher(publisher)

    def apply(builder: SetupBuilder) -> None:
        _declare_event_stream(builder, exchange)
        builder.add_publisher(publisher, exchange)

    return apply


def event_stream_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
) -> Setup:
    """Consume ``routing_key`` (topic patterns allowed) from the event stream with ``handler``.

    Messages arrive on the service's durable queue ``events.topic.exchange.queue.<service>``.
    The event type comes from ``event_type``, else from the handler's first annotation.
    """
    spec = _handler_spec(routing_key, handler, event_type)

    def apply(builder: SetupBuilder) -> None:
        queue = naming.event_stream_queue(builder.service, exchange)
        _consume_stream(builder, exchange, queue, spec, durable=True)

    return apply


def transient_event_stream_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
) -> Setup:
    """Like ``event_stream_consumer``, on an exclusive auto-delete queue of its own.

    Events published while the service is down are not kept for it: for caches and live views.
    """
    spec = _handler_spec(routing_key, handler, event_type)

    def apply(builder: SetupBuilder) -> None:
        queue = naming.transient_event_stream_queue(builder.service, exchange)
        _consume_stream(builder, exchange, queue, spec, durable=False)

    return apply


def _consume_stream(
    builder: SetupBuilder, exchange: str, queue: str, spec: HandlerSpec, *, durable: bool
) -> None:
    _declare_event_stream(builder, exchange)
    if durable:
        queue_spec = QueueSpec(queue, arguments=naming.durable_queue_arguments())
    else:
        queue_spec = QueueSpec(
            queue,
            durable=False,
            auto_delete=True,
            exclusive=True,
            arguments=naming.transient_queue_arguments(),
        )
    builder.topology.add_queue(queue_spec)
    builder.topology.add_binding(BindingSpec(queue, exchange, spec.routing_key))
    builder.add_handler(queue, spec)


def with_prefetch_limit(limit: int) -> Setup:
    """How many unacknowledged messages each consumer may hold (goamqp's default: 20)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PREFETCH:
        raise ConfigurationError(
            f"with_prefetch_limit({limit!r}): the limit must be an int from 1 to {MAX_PREFETCH}"
        )

    def apply(builder: SetupBuilder) -> None:
        builder.prefetch = limit

    return apply


def with_type_mapping(*routes: Route) -> Setup:
    """Routing key <-> type pairs used to decode events for handlers annotated with a union."""
    mapping = TypeMapping(routes)

    def apply(builder: SetupBuilder) -> None:
        builder.type_mapping.merge(mapping)

    return apply


def close_listener(callback: CloseCallback) -> Setup:
    """Call ``callback(exc)`` when the connection is lost (with the error) or closed (None)."""
    if not callable(callback):
        raise ConfigurationError(f"close_listener needs a callable, got {callback!r}")

    def apply(builder: SetupBuilder) -> None:
        builder.close_listeners.append(callback)

    return apply


def _handler_spec(routing_key: str, handler: Handler, event_type: Any) -> HandlerSpec:
    validate_routing_key(routing_key, what=f"consumer {handler_name(handler)}")
    spec = HandlerSpec(routing_key, handler, event_type)
    check_handler(spec)
    return spec


def _check_publisher(publisher: Publisher) -> None:
    if not isinstance(publisher, Publisher):
        raise ConfigurationError(f"expected a Publisher, got {publisher!r}")
