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
from ._publisher import Destination, Publisher
from ._requests import MAX_PENDING_REQUESTS, PendingRequests
from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy
from ._routing import Route, TypeMapping, validate_routing_key
from ._topology import BindingSpec, ExchangeSpec, QueueSpec, Topology
from .transports._base import CloseCallback

__all__ = [
    "Setup",
    "SetupBuilder",
    "close_listener",
    "event_stream_consumer",
    "event_stream_publisher",
    "queue_publisher",
    "service_publisher",
    "service_request_consumer",
    "service_response_consumer",
    "transient_event_stream_consumer",
    "with_concurrency_limit",
    "with_prefetch_limit",
    "with_queue_options",
    "with_retry_policy",
    "with_type_mapping",
]

MAX_PREFETCH = 65535  # AMQP's prefetch-count is a 16-bit field


@dataclass(slots=True)
class QueueConsumers:
    """The handlers registered on one queue."""

    queue: str
    transient: bool = False
    handlers: list[HandlerSpec] = field(default_factory=list)

    def delays_ms(self, default: RetryPolicy) -> list[int]:
        """Every retry delay any handler of this queue may use: one delay queue each."""
        return sorted({d for h in self.handlers for d in (h.retry or default).delays_ms})


class SetupBuilder:
    """Collects what the setups of one ``Connection.start`` ask for."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.topology = Topology()
        self.consumers: dict[str, QueueConsumers] = {}
        self.publishers: list[tuple[Publisher, Destination]] = []
        self.request_queues: set[str] = set()  # their handlers' results are responses
        self.pending: dict[str, PendingRequests] = {}  # response queue -> awaited requests
        self.type_mapping = TypeMapping()
        self.prefetch = naming.DEFAULT_PREFETCH
        self.retry_policy = DEFAULT_RETRY_POLICY
        self.concurrency_limit: int | None = None
        self.queue_arguments: dict[str, Any] = {}  # opt-in, not goamqp-compatible
        self.close_listeners: list[CloseCallback] = []

    def add_handler(self, queue: str, spec: HandlerSpec, *, transient: bool = False) -> None:
        consumers = self.consume_queue(queue, transient=transient)
        consumers.handlers.append(spec)
        check_overlaps(
            queue, [(h.routing_key, handler_name(h.handler)) for h in consumers.handlers]
        )

    def add_publisher(self, publisher: Publisher, destination: Destination) -> None:
        if any(known is publisher for known, _ in self.publishers):
            raise ConfigurationError(
                f"publisher with routes {publisher._describe_routes()} is set up twice"
            )
        self.publishers.append((publisher, destination))
        self.type_mapping.merge(publisher.type_mapping)

    def consume_queue(self, queue: str, *, transient: bool = False) -> QueueConsumers:
        """Consume ``queue`` even when no handler is registered on it (awaited responses)."""
        return self.consumers.setdefault(queue, QueueConsumers(queue, transient))

    def finish(self) -> None:
        """What only the complete setup decides: queue options, retry and dead-letter queues."""
        if self.queue_arguments:
            self.check_bounded_queues()
            durable_names = {q for q, c in self.consumers.items() if not c.transient}
            self.topology.queues = [
                QueueSpec(q.name, arguments={**q.arguments, **self.queue_arguments})
                if q.name in durable_names
                else q
                for q in self.topology.queues
            ]
        self.declare_failure_queues()

    def check_bounded_queues(self) -> None:
        """Refuse a length limit on a queue that delayed retries dead-letter back into.

        A retry waits in ``<queue>.retry.<ms>`` and expires back into ``<queue>`` by broker
        dead-lettering, which nobody confirms: into a full queue the broker drops it silently
        (a classic queue dead-letters at most once).
        """
        max_length = self.queue_arguments.get("x-max-length")
        if max_length is None:
            return
        for consumers in self.consumers.values():
            delays = consumers.delays_ms(self.retry_policy)
            if consumers.transient or not delays:
                continue
            handlers = ", ".join(
                f"{handler_name(h.handler)} ({h.routing_key!r})"
                for h in consumers.handlers
                if (h.retry or self.retry_policy).attempts > 1
            )
            raise ConfigurationError(
                f"queue {consumers.queue!r} has with_queue_options(max_length={max_length}), "
                f"but its handlers {handlers} retry through delay queues "
                f"{', '.join(repr(naming.retry_queue(consumers.queue, ms)) for ms in delays)}: "
                "a retry expires back into the queue by broker dead-lettering, which nobody "
                "confirms, so a full queue would drop it silently. Give those handlers "
                "RetryPolicy(attempts=1) (retry= on the consumer, or with_retry_policy for the "
                "connection's default) so failures go straight to the dead-letter queue, or drop "
                "max_length"
            )

    def queues_with_retries(self) -> list[str]:
        """Every consumed queue and its delay queues: where this connection's work waits."""
        return [
            name
            for queue, consumers in self.consumers.items()
            for name in (
                queue,
                *(naming.retry_queue(queue, ms) for ms in consumers.delays_ms(self.retry_policy)),
            )
        ]

    def declare_failure_queues(self) -> None:
        """Each consumed queue's delay queues and dead-letter queue, once every setup ran.

        They go with their queue: durable beside a durable queue, exclusive to the connection
        beside a transient one (whose messages are not kept across restarts anyway).
        """
        for consumers in self.consumers.values():
            queue = consumers.queue
            kind: dict[str, Any] = (
                {"durable": False, "exclusive": True, "auto_delete": False}
                if consumers.transient
                else {}
            )
            self.topology.add_queue(QueueSpec(naming.dead_letter_queue(queue), **kind))
            for delay_ms in consumers.delays_ms(self.retry_policy):
                self.topology.add_queue(
                    QueueSpec(
                        naming.retry_queue(queue, delay_ms),
                        arguments=naming.retry_queue_arguments(queue, delay_ms),
                        **kind,
                    )
                )

    def declare_durable_queue(self, queue: str) -> None:
        self.topology.add_queue(QueueSpec(queue, arguments=naming.durable_queue_arguments()))


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
        builder.add_publisher(publisher, Destination(exchange, f"event stream {exchange!r}"))

    return apply


def service_publisher(
    target_service: str,
    publisher: Publisher,
    *,
    awaitable: bool = False,
    max_pending: int = MAX_PENDING_REQUESTS,
) -> Setup:
    """Send ``publisher``'s events as requests to ``target_service``.

    Requests go to ``<target>.direct.exchange.request``, published mandatory: while no request
    queue is bound there for the request's routing key (the target never started, or consumes
    no such key), ``publish`` and ``request`` raise ``Unroutable`` at once. A target that has
    started once keeps its durable request queue, where requests wait while it is down. With
    ``awaitable=True``,
    ``await publisher.request(event, ResponseType, timeout=...)`` also waits for the response, on
    this service's durable response queue ``<target>.headers.exchange.response.queue.<service>``;
    at most ``max_pending`` requests wait at once (more wait for a slot).
    """
    _check_publisher(publisher)
    _check_service_name(target_service, "service_publisher")
    if max_pending < 1:
        raise ConfigurationError(f"service_publisher: max_pending must be >= 1, got {max_pending}")

    def apply(builder: SetupBuilder) -> None:
        exchange = naming.request_exchange(target_service)
        _declare_service_exchanges(builder, target_service)
        pending = None
        if awaitable:
            queue = _declare_response_queue(
                builder, target_service, [r.routing_key for r in publisher.routes]
            )
            pending = builder.pending.setdefault(
                queue, PendingRequests(target_service, max_pending)
            )
            builder.consume_queue(queue)
        builder.add_publisher(
            publisher,
            Destination(
                exchange,
                f"requests to {target_service!r}",
                # A request nobody consumes fails at once (Unroutable), not at its timeout.
                mandatory=True,
                pending=pending,
                target_service=target_service,
            ),
        )

    return apply


def queue_publisher(publisher: Publisher, queue_name: str, *, cc: tuple[str, ...] = ()) -> Setup:
    """Send ``publisher``'s events straight to the queue ``queue_name`` (and the ``cc`` queues).

    As goamqp does, messages go through the default exchange with the event's routing key and
    the destination queues in the ``CC`` header (sender-selected distribution), so the consumer
    still dispatches by routing key. A publish that reaches no queue raises ``PublishError``.
    """
    _check_publisher(publisher)
    for name in (queue_name, *cc):
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"queue_publisher: queue name {name!r} must be a non-empty str"
            )

    def apply(builder: SetupBuilder) -> None:
        builder.add_publisher(
            publisher,
            Destination("", f"queue {queue_name!r}", cc=(queue_name, *cc), mandatory=True),
        )

    return apply


def service_request_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
) -> Setup:
    """Answer requests sent to this service with ``routing_key``; the handler returns the response.

    Declares ``<service>.direct.exchange.request`` and ``<service>.headers.exchange.response``
    and consumes ``<service>.direct.exchange.request.queue``. The response goes to the caller
    named in the request's ``service`` header, with the request's routing key.
    """
    spec = _handler_spec(routing_key, handler, event_type, retry)

    def apply(builder: SetupBuilder) -> None:
        service = builder.service
        queue = naming.request_queue(service)
        _declare_service_exchanges(builder, service)
        builder.declare_durable_queue(queue)
        builder.topology.add_binding(
            BindingSpec(queue, naming.request_exchange(service), routing_key)
        )
        builder.request_queues.add(queue)
        builder.add_handler(queue, spec)

    return apply


def service_response_consumer(
    target_service: str,
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
) -> Setup:
    """Consume responses from ``target_service`` to this service's requests with ``routing_key``.

    Queue ``<target>.headers.exchange.response.queue.<service>``, bound to
    ``<target>.headers.exchange.response`` with ``{"service": "<service>"}``.
    """
    _check_service_name(target_service, "service_response_consumer")
    spec = _handler_spec(routing_key, handler, event_type, retry)

    def apply(builder: SetupBuilder) -> None:
        _declare_service_exchanges(builder, target_service)
        queue = _declare_response_queue(builder, target_service, [routing_key])
        builder.add_handler(queue, spec)

    return apply


def _declare_service_exchanges(builder: SetupBuilder, service: str) -> None:
    builder.topology.add_exchange(ExchangeSpec(naming.request_exchange(service), naming.DIRECT))
    builder.topology.add_exchange(ExchangeSpec(naming.response_exchange(service), naming.HEADERS))


def _declare_response_queue(builder: SetupBuilder, target: str, keys: list[str]) -> str:
    queue = naming.response_queue(target, builder.service)
    builder.declare_durable_queue(queue)
    for key in keys:
        builder.topology.add_binding(
            BindingSpec(
                queue,
                naming.response_exchange(target),
                key,
                {naming.SERVICE_HEADER: builder.service},
            )
        )
    return queue


def event_stream_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
    retry: RetryPolicy | None = None,
) -> Setup:
    """Consume ``routing_key`` (topic patterns allowed) from the event stream with ``handler``.

    Messages arrive on the service's durable queue ``events.topic.exchange.queue.<service>``.
    The event type comes from ``event_type``, else from the handler's first annotation.
    ``retry`` overrides the connection's retry policy for this handler.
    """
    spec = _handler_spec(routing_key, handler, event_type, retry)

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
    retry: RetryPolicy | None = None,
) -> Setup:
    """Like ``event_stream_consumer``, on an exclusive auto-delete queue of its own.

    Events published while the service is down are not kept for it: for caches and live views.
    """
    spec = _handler_spec(routing_key, handler, event_type, retry)

    def apply(builder: SetupBuilder) -> None:
        queue = naming.transient_event_stream_queue(builder.service, exchange)
        _consume_stream(builder, exchange, queue, spec, durable=False)

    return apply


def _consume_stream(
    builder: SetupBuilder, exchange: str, queue: str, spec: HandlerSpec, *, durable: bool
) -> None:
    _declare_event_stream(builder, exchange)
    if durable:
        builder.declare_durable_queue(queue)
    else:
        builder.topology.add_queue(
            QueueSpec(
                queue,
                durable=False,
                auto_delete=True,
                exclusive=True,
                arguments=naming.transient_queue_arguments(),
            )
        )
    builder.topology.add_binding(BindingSpec(queue, exchange, spec.routing_key))
    builder.add_handler(queue, spec, transient=not durable)


def with_prefetch_limit(limit: int) -> Setup:
    """How many unacknowledged messages each consumer may hold (goamqp's default: 20)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PREFETCH:
        raise ConfigurationError(
            f"with_prefetch_limit({limit!r}): the limit must be an int from 1 to {MAX_PREFETCH}"
        )

    def apply(builder: SetupBuilder) -> None:
        builder.prefetch = limit

    return apply


def with_retry_policy(policy: RetryPolicy) -> Setup:
    """The retry policy of every handler of this connection that does not set its own.

    Default: ``RetryPolicy(attempts=3, delays=(1.0, 10.0))``.
    """
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(f"with_retry_policy takes a RetryPolicy, got {policy!r}")

    def apply(builder: SetupBuilder) -> None:
        builder.retry_policy = policy

    return apply


def with_concurrency_limit(limit: int) -> Setup:
    """At most ``limit`` handlers of this connection run at once (prefetch bounds each queue)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(
            f"with_concurrency_limit({limit!r}): the limit must be an int >= 1"
        )

    def apply(builder: SetupBuilder) -> None:
        builder.concurrency_limit = limit

    return apply


def with_queue_options(
    *,
    quorum: bool = False,
    single_active_consumer: bool = False,
    max_length: int | None = None,
    overflow: str = "reject-publish",
) -> Setup:
    """Extra arguments for this service's durable queues. NOT goamqp-compatible.

    A goamqp service declares the same queue without them, and RabbitMQ refuses a queue
    declared with other arguments (PRECONDITION_FAILED): use these only where no goamqp service
    declares the queue, and on a fresh queue (delete the old one first).

    - ``quorum``: a replicated quorum queue (``x-queue-type: quorum``);
    - ``single_active_consumer``: one consumer at a time gets messages, others stand by;
    - ``max_length`` with ``overflow``: at most that many messages; ``"reject-publish"`` (the
      default) or ``"reject-publish-dlx"`` makes further publishes fail with ``PublishError``
      instead of growing the queue. ``"drop-head"`` is refused: it discards the oldest
      messages silently. A queue with ``max_length`` is refused at start if any of its handlers
      can retry (a ``RetryPolicy`` with ``attempts > 1``, the connection's default included):
      retries come back by broker dead-lettering, which a full queue drops silently.
    """
    arguments: dict[str, Any] = {}
    if quorum:
        arguments["x-queue-type"] = "quorum"
    if single_active_consumer:
        arguments["x-single-active-consumer"] = True
    if max_length is not None:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ConfigurationError(f"with_queue_options: max_length {max_length!r} must be >= 1")
        if overflow == "drop-head":
            raise ConfigurationError(
                "with_queue_options: overflow 'drop-head' discards the oldest messages of a "
                "full queue silently; use 'reject-publish' (the default), which makes "
                "publishers see PublishError instead"
            )
        if overflow not in ("reject-publish", "reject-publish-dlx"):
            raise ConfigurationError(
                f"with_queue_options: overflow {overflow!r} must be 'reject-publish' or "
                "'reject-publish-dlx'"
            )
        arguments["x-max-length"] = max_length
        arguments["x-overflow"] = overflow

    def apply(builder: SetupBuilder) -> None:
        builder.queue_arguments.update(arguments)

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


def _handler_spec(
    routing_key: str, handler: Handler, event_type: Any, retry: RetryPolicy | None
) -> HandlerSpec:
    validate_routing_key(routing_key, what=f"consumer {handler_name(handler)}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry= takes a RetryPolicy, got {retry!r}")
    spec = HandlerSpec(routing_key, handler, event_type, retry)
    check_handler(spec)
    return spec


def _check_service_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{what}: target service must be a non-empty str, got {name!r}")


def _check_publisher(publisher: Publisher) -> None:
    if not isinstance(publisher, Publisher):
        raise ConfigurationError(f"expected a Publisher, got {publisher!r}")
