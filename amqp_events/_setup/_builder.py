"""The builder that setup functions fill in, and the checks they share.

A setup function only records what to declare and consume, on a ``SetupBuilder``;
``Connection.start`` applies every setup to one builder, checks the whole result, and only then
touches the broker. The setup functions themselves are in ``_streams``,
``_services`` and ``_options`` (all listed in the package's ``__init__``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from .. import _naming as naming
from .._dispatch import check_overlaps
from .._errors import ConfigurationError
from .._handlers import Handler, HandlerSpec, check_handler, handler_name
from .._instrument import Instrument
from .._message_log import MessageLogger
from .._publisher import Destination, Publisher
from .._requests import PendingRequests
from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy
from .._routes import TypeMapping
from .._topics import validate_routing_key
from .._topology import BindingSpec, ExchangeSpec, ExchangeType, QueueSpec, Topology
from .._transport._base import CloseCallback, Transport
from .._versions import Upcaster

__all__ = [
    "MAX_PREFETCH",
    "BackgroundWork",
    "QueueConsumers",
    "Setup",
    "SetupBuilder",
    "SetupPlan",
    "check_publisher",
    "check_service_name",
    "handler_spec",
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


class SetupPlan:
    """What the setups of one ``Connection.start`` asked for; private to the package."""

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
        self.message_loggers: list[MessageLogger] = []
        self.tasks: list[tuple[str, BackgroundWork]] = []
        self.upcasters: dict[str, dict[int, Upcaster]] = {}
        # Package-internal users of the live transport (the outbox relay): called once the
        # topology is declared, before consumers start, with the connection's instrument
        # (metrics, tracing; None without); the transport reconnects by itself.
        self.transport_users: list[Callable[[Transport, Instrument | None], None]] = []

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


class SetupBuilder:
    """What a setup function works on: ``Connection.start`` makes one and calls every setup
    with it, checks the whole result, and only then touches the broker.

    A setup function is any ``Callable[[SetupBuilder], None]`` (the ``Setup`` type); the
    library's own (``event_stream_consumer``, ``with_prefetch_limit``, ...) are such functions.
    Write one to package a piece of topology or a background job for several services::

        def audit_log(builder: SetupBuilder) -> None:
            builder.declare_exchange("audit.fanout.exchange", "fanout")
            builder.declare_queue(f"audit.queue.{builder.service_name}")
            builder.bind(f"audit.queue.{builder.service_name}", "audit.fanout.exchange", "")
            builder.consume(f"audit.queue.{builder.service_name}", "#", on_audit)

        await conn.start(audit_log, event_stream_publisher(publisher))

    Everything declared is declared again after each reconnection and by the topology check.
    Declaring the same thing twice with equal settings is fine; with different settings it is
    a ``ConfigurationError``. A builder is only valid during ``start()``.
    """

    __slots__ = ("_plan",)

    def __init__(self, service_name: str) -> None:
        self._plan = SetupPlan(service_name)

    def __repr__(self) -> str:
        return f"SetupBuilder({self._plan.service!r})"

    @property
    def service_name(self) -> str:
        """The name of the service being set up (part of its queue names)."""
        return self._plan.service

    def declare_exchange(
        self,
        name: str,
        type: ExchangeType = "topic",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare the exchange ``name`` of ``type`` (topic, direct, headers or fanout)."""
        _check_name(name, "declare_exchange", "exchange", allow_empty=False)
        if type not in _EXCHANGE_TYPES:
            raise ConfigurationError(
                f"declare_exchange({name!r}): type must be one of {', '.join(_EXCHANGE_TYPES)}, "
                f"got {type!r}"
            )
        self._plan.topology.add_exchange(
            ExchangeSpec(name, type, durable, auto_delete, arguments=dict(arguments or {}))
        )

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare the queue ``name``, exactly with these settings and ``arguments``
        (``{"x-queue-type": "quorum"}`` ...)."""
        _check_name(name, "declare_queue", "queue", allow_empty=False)
        self._plan.topology.add_queue(
            QueueSpec(name, durable, auto_delete, exclusive, arguments=dict(arguments or {}))
        )

    def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        *,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key`` (a topic pattern on a topic
        exchange; ``arguments`` to match on a headers exchange)."""
        _check_name(queue, "bind", "queue", allow_empty=False)
        _check_name(exchange, "bind", "exchange", allow_empty=False)
        validate_routing_key(routing_key, what=f"bind({queue!r}, {exchange!r})")
        self._plan.topology.add_binding(
            BindingSpec(queue, exchange, routing_key, dict(arguments or {}))
        )

    def consume(
        self,
        queue: str,
        routing_key: str,
        handler: Handler,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Call ``handler`` for messages on ``queue`` whose routing key matches
        ``routing_key``, as every consumer is called: decoded to ``event_type`` (else the
        handler's first annotation), acked after it returns, retried and dead-lettered by the
        policy (the queue gets ``<queue>.retry.<ms>`` and ``<queue>.dlq`` beside it). The
        queue must exist: declare it in a setup, or it is declared elsewhere."""
        _check_name(queue, "consume", "queue", allow_empty=False)
        self._plan.add_handler(queue, handler_spec(routing_key, handler, event_type, retry))

    def on_close(self, callback: CloseCallback) -> None:
        """Call ``callback(exc)`` when the connection is lost for good (with the error) or
        closed (None); as the ``close_listener`` setup."""
        if not callable(callback):
            raise ConfigurationError(f"on_close needs a callable, got {callback!r}")
        self._plan.close_listeners.append(callback)

    def run_while_started(self, name: str, work: BackgroundWork) -> None:
        """Run ``await work()`` as a task once the connection has started (its topology
        declared, its consumers running), until ``close()``.

        At ``close()`` the task is cancelled first, before consumers stop, and awaited (up to
        ``shutdown_timeout``). A ``work`` that returns ends quietly; one that raises is logged
        and stops the connection: ``run()`` raises its exception, so a background job never
        dies unnoticed. ``name`` is for logs and must be unique per connection.
        """
        if not callable(work):
            raise ConfigurationError(f"run_while_started({name!r}) needs a callable, got {work!r}")
        if not isinstance(name, str) or not name or name in (n for n, _ in self._plan.tasks):
            raise ConfigurationError(
                f"run_while_started: name must be a non-empty str unique to the connection, "
                f"got {name!r}"
            )
        self._plan.tasks.append((name, work))


def _check_name(name: str, what: str, kind: str, *, allow_empty: bool) -> None:
    if not isinstance(name, str) or not (name or allow_empty):
        raise ConfigurationError(f"{what}: the {kind} name must be a non-empty str, got {name!r}")
    if len(name.encode()) > 255:
        raise ConfigurationError(f"{what}: the {kind} name {name[:40]!r}... is over 255 bytes")


_EXCHANGE_TYPES: Final = ("topic", "direct", "headers", "fanout")


Setup: TypeAlias = Callable[[SetupBuilder], None]
"""What ``Connection.start`` takes: a function that records its part on a ``SetupBuilder``."""

BackgroundWork: TypeAlias = Callable[[], Awaitable[None]]
"""A job that runs while a connection is started (``SetupBuilder.run_while_started``)."""


def handler_spec(
    routing_key: str, handler: Handler, event_type: Any, retry: RetryPolicy | None
) -> HandlerSpec:
    validate_routing_key(routing_key, what=f"consumer {handler_name(handler)}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry= takes a RetryPolicy, got {retry!r}")
    spec = HandlerSpec(routing_key, handler, event_type, retry)
    check_handler(spec)
    return spec


def check_service_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{what}: target service must be a non-empty str, got {name!r}")


def check_publisher(publisher: Publisher) -> None:
    if not isinstance(publisher, Publisher):
        raise ConfigurationError(f"expected a Publisher, got {publisher!r}")
