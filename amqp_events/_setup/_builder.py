"""The builder that setup functions fill in, and the checks they share.

A setup function only records what to declare and consume, on a ``SetupBuilder``;
``Connection.start`` applies every setup to one builder, checks the whole result, and only then
touches the broker. The setup functions themselves are in ``_streams``,
``_services`` and ``_options`` (all listed in the package's ``__init__``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .. import _naming as naming
from .._dispatch import check_overlaps
from .._errors import ConfigurationError
from .._handlers import Handler, HandlerSpec, check_handler, handler_name
from .._message_log import MessageLogger
from .._publisher import Destination, Publisher
from .._requests import PendingRequests
from .._retry import DEFAULT_RETRY_POLICY, RetryPolicy
from .._routes import TypeMapping
from .._topics import validate_routing_key
from .._topology import QueueSpec, Topology
from .._transport._base import CloseCallback

__all__ = [
    "MAX_PREFETCH",
    "QueueConsumers",
    "Setup",
    "SetupBuilder",
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
        self.message_loggers: list[MessageLogger] = []

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
"""What ``Connection.start`` takes: a function that records its part on the builder."""


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
