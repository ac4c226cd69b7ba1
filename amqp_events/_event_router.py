"""Decorators that register handlers, written once for ``EventRouter`` and ``Connection``.

``Registrations`` holds every decorator; each one builds a setup function through a single
method, ``_register``. ``EventRouter`` records the setups (FastAPI's routers: handlers declared
away from the connection); ``Connection`` hands them to its own ``EventRouter`` once it checked
that it is not started yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._handlers import Handler
from ._retry import RetryPolicy
from ._setup import (
    Setup,
    event_stream_consumer,
    service_request_consumer,
    service_response_consumer,
    stream_consumer,
    transient_event_stream_consumer,
    transient_stream_consumer,
)

__all__ = ["EventRouter", "H", "Registrations"]

H = TypeVar("H", bound=Handler)


class Registrations:
    """The consumer decorators; subclasses say where the setups go (``_register``)."""

    __slots__ = ()

    def _register(self, make: Callable[[Handler], Setup]) -> Callable[[H], H]:
        """A decorator that registers ``make(handler)`` and hands the handler back unchanged."""
        raise NotImplementedError

    def stream_consumer(
        self,
        stream: str,
        routing_key: str,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
        queue_suffix: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` from ``stream`` on this service's durable queue
        ``<stream>.topic.exchange.queue.<service>`` (see ``stream_consumer``)."""
        return self._register(
            lambda h: stream_consumer(
                stream, routing_key, h, event_type, retry=retry, queue_suffix=queue_suffix
            )
        )

    def transient_stream_consumer(
        self,
        stream: str,
        routing_key: str,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
        queue_suffix: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` from ``stream`` on an exclusive, auto-delete queue
        of its own (see ``transient_stream_consumer``)."""
        return self._register(
            lambda h: transient_stream_consumer(
                stream, routing_key, h, event_type, retry=retry, queue_suffix=queue_suffix
            )
        )

    def event_stream_consumer(
        self,
        routing_key: str,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
        queue_suffix: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` on this service's durable queue of the ``events``
        stream (see ``event_stream_consumer``)."""
        return self._register(
            lambda h: event_stream_consumer(
                routing_key, h, event_type, retry=retry, queue_suffix=queue_suffix
            )
        )

    def transient_event_stream_consumer(
        self,
        routing_key: str,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
        queue_suffix: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` from the ``events`` stream on an exclusive,
        auto-delete queue of its own (see ``transient_event_stream_consumer``)."""
        return self._register(
            lambda h: transient_event_stream_consumer(
                routing_key, h, event_type, retry=retry, queue_suffix=queue_suffix
            )
        )

    def service_request_consumer(
        self, routing_key: str, event_type: Any = None, *, retry: RetryPolicy | None = None
    ) -> Callable[[H], H]:
        """Decorator: answer requests with ``routing_key``; the handler returns the response
        (goamqp's ``RequestResponseHandler``)."""
        return self._register(
            lambda h: service_request_consumer(routing_key, h, event_type, retry=retry)
        )

    def service_response_consumer(
        self,
        target_service: str,
        routing_key: str,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator: handle responses from ``target_service`` to requests with ``routing_key``."""
        return self._register(
            lambda h: service_response_consumer(
                target_service, routing_key, h, event_type, retry=retry
            )
        )


class EventRouter(Registrations):
    """A group of handlers, attached to a connection with ``conn.include(router)``.

    Each module of a service can declare its own handlers, with the same decorators as
    ``Connection``::

        router = EventRouter()

        @router.event_stream_consumer("Order.Created")
        async def on_created(event: OrderCreated) -> None: ...

        @router.stream_consumer("billing", "Invoice.Paid")
        async def on_paid(event: InvoicePaid) -> None: ...
    """

    __slots__ = ("_setups",)

    def __init__(self) -> None:
        self._setups: list[Setup] = []

    @property
    def setups(self) -> tuple[Setup, ...]:
        """The setups the decorators registered, in order."""
        return tuple(self._setups)

    def add(self, *setups: Setup) -> None:
        """Add setup functions, e.g. ``event_stream_consumer(key, handler)``."""
        self._setups.extend(setups)

    def _register(self, make: Callable[[Handler], Setup]) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self._setups.append(make(handler))
            return handler

        return register
