"""Service-to-service setups: requests and responses, on goamqp's wire.

A request goes to ``<target>.direct.exchange.request``; its response to
``<responder>.headers.exchange.response`` with header ``service`` = the caller, which routes it
to the caller's queue ``<responder>.headers.exchange.response.queue.<caller>``.
"""

from __future__ import annotations

from typing import Any

from .. import _naming as naming
from .._errors import ConfigurationError
from .._handlers import Handler
from .._publisher import Destination, Publisher
from .._requests import MAX_PENDING_REQUESTS, PendingRequests
from .._retry import RetryPolicy
from ._builder import (
    Setup,
    SetupBuilder,
    check_publisher,
    check_service_name,
    handler_spec,
)

__all__ = [
    "request_response_handler",
    "service_publisher",
    "service_request_consumer",
    "service_response_consumer",
]


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
    check_publisher(publisher)
    check_service_name(target_service, "service_publisher")
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
            pending = builder._plan.pending.setdefault(
                queue, PendingRequests(target_service, max_pending)
            )
            builder._plan.consume_queue(queue)
        builder._plan.add_publisher(
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


def service_request_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
) -> Setup:
    """Answer requests sent to this service with ``routing_key``; the handler returns the response.

    This is goamqp's ``RequestResponseHandler`` (also available under that name,
    ``request_response_handler``); goamqp's ``ServiceRequestConsumer``, whose handler answers
    nothing, is this with a handler that returns None (it may answer later with
    ``Connection.publish_service_response``).

    Declares ``<service>.direct.exchange.request`` and ``<service>.headers.exchange.response``
    and consumes ``<service>.direct.exchange.request.queue``. The response goes to the caller
    named in the request's ``service`` header, with the request's routing key; a handler that
    returns None sends no response.
    """
    spec = handler_spec(routing_key, handler, event_type, retry)

    def apply(builder: SetupBuilder) -> None:
        service = builder.service_name
        queue = naming.request_queue(service)
        _declare_service_exchanges(builder, service)
        builder._plan.declare_durable_queue(queue)
        builder.bind(queue, naming.request_exchange(service), routing_key)
        builder._plan.request_queues.add(queue)
        builder._plan.add_handler(queue, spec)

    return apply


request_response_handler = service_request_consumer


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
    check_service_name(target_service, "service_response_consumer")
    spec = handler_spec(routing_key, handler, event_type, retry)

    def apply(builder: SetupBuilder) -> None:
        _declare_service_exchanges(builder, target_service)
        queue = _declare_response_queue(builder, target_service, [routing_key])
        builder._plan.add_handler(queue, spec)

    return apply


def _declare_service_exchanges(builder: SetupBuilder, service: str) -> None:
    builder.declare_exchange(naming.request_exchange(service), naming.DIRECT)
    builder.declare_exchange(naming.response_exchange(service), naming.HEADERS)


def _declare_response_queue(builder: SetupBuilder, target: str, keys: list[str]) -> str:
    queue = naming.response_queue(target, builder.service_name)
    builder._plan.declare_durable_queue(queue)
    for key in keys:
        builder.bind(
            queue,
            naming.response_exchange(target),
            key,
            arguments={naming.SERVICE_HEADER: builder.service_name},
        )
    return queue
