"""EventRouter: handlers declared with decorators, away from the connection, like FastAPI's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import _naming as naming
from ._handlers import Handler
from ._retry import RetryPolicy
from ._setup import (
    Setup,
    event_stream_consumer,
    service_request_consumer,
    service_response_consumer,
    transient_event_stream_consumer,
)

__all__ = ["EventRouter"]

H = TypeVar("H", bound=Handler)


class EventRouter:
    """A group of handlers, attached to a connection with ``conn.include(router)``.

    Each module of a service can declare its own handlers::

        router = EventRouter()

        @router.event_stream_consumer("Order.Created")
        async def on_created(event: OrderCreated) -> None: ...
    """

    def __init__(self) -> None:
        self._setups: list[Setup] = []

    @property
    def setups(self) -> tuple[Setup, ...]:
        """The setups the decorators registered, in order."""
        return tuple(self._setups)

    def add(self, *setups: Setup) -> None:
        """Add setup functions, e.g. ``event_stream_consumer(key, handler)``."""
        self._setups.extend(setups)

    def _registering(self, make: Callable[[Handler], Setup]) -> Callable[[H], H]:
        """A decorator that records ``make(handler)`` and hands the handler back unchanged."""

        def register(handler: H) -> H:
            self._setups.append(make(handler))
            return handler

        return register

    def event_stream_consumer(
        self,
        routing_key: str,
        event_type: Any = None,
        *,
        exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` on the service's durable event stream queue."""
        return self._registering(
            lambda h: event_stream_consumer(
                routing_key, h, event_type, exchange=exchange, retry=retry
            )
        )

    def transient_event_stream_consumer(
        self,
        routing_key: str,
        event_type: Any = None,
        *,
        exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` on an exclusive, auto-delete queue of its own."""
        return self._registering(
            lambda h: transient_event_stream_consumer(
                routing_key, h, event_type, exchange=exchange, retry=retry
            )
        )

    def service_request_consumer(
        self, routing_key: str, event_type: Any = None, *, retry: RetryPolicy | None = None
    ) -> Callable[[H], H]:
        """Decorator: answer requests with ``routing_key``; the handler returns the response."""
        return self._registering(
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
        return self._registering(
            lambda h: service_response_consumer(
                target_service, routing_key, h, event_type, retry=retry
            )
        )
