"""Publisher: event type -> routing key, encode, publish, wait for the broker's confirm."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ._codec import encode
from ._errors import ConfigurationError, PublishError
from ._headers import check_user_headers
from ._naming import SERVICE_HEADER
from ._routing import Route, TypeMapping
from .transports._base import Transport

__all__ = ["Publisher"]


@dataclass(frozen=True, slots=True)
class _Target:
    transport: Transport
    exchange: str
    service: str
    base_headers: Mapping[str, Any]
    description: str


class Publisher:
    """Publishes events; each event type is published with the routing key of its ``Route``.

    ``Publisher(Route(OrderCreated, "Order.Created"))``, attached to a connection by a setup such
    as ``event_stream_publisher(publisher)``. ``await publisher.publish(event)`` returns once the
    broker confirmed the message (publisher confirms), or raises ``PublishError``.
    """

    __slots__ = ("_key_by_type", "_mapping", "_target")

    def __init__(self, *routes: Route) -> None:
        for route in routes:
            if not isinstance(route, Route):
                raise ConfigurationError(
                    f"Publisher takes Route(event_type, routing_key) arguments, got {route!r}"
                )
        self._mapping = TypeMapping(routes)
        # The hot path does one dict lookup by exact type.
        self._key_by_type: dict[type[Any], str] = {r.event_type: r.routing_key for r in routes}
        self._target: _Target | None = None

    @property
    def routes(self) -> list[Route]:
        """The routes this publisher was created with."""
        return self._mapping.routes()

    @property
    def type_mapping(self) -> TypeMapping:
        return self._mapping

    def _attach(self, transport: Transport, exchange: str, service: str, description: str) -> None:
        if self._target is not None:
            raise ConfigurationError(
                f"publisher with routes {self._describe_routes()} is already attached to "
                f"{self._target.description}; create one Publisher per setup"
            )
        self._target = _Target(transport, exchange, service, {SERVICE_HEADER: service}, description)

    def _detach(self) -> None:
        self._target = None

    def _describe_routes(self) -> str:
        return ", ".join(f"{r.event_type.__name__}->{r.routing_key!r}" for r in self.routes)

    def routing_key_for(self, event: BaseModel) -> str:
        """The routing key ``event`` is published with; ConfigurationError if it has no route."""
        key = self._key_by_type.get(type(event))
        if key is not None:
            return key
        for base in type(event).__mro__[1:]:
            key = self._key_by_type.get(base)
            if key is not None:
                return key
        raise ConfigurationError(
            f"no route for {type(event).__name__}: add Route({type(event).__name__}, "
            f"'<routing key>') to the Publisher (it has {self._describe_routes() or 'none'})"
        )

    async def publish(self, event: BaseModel, headers: Mapping[str, Any] | None = None) -> None:
        """Publish ``event`` and wait for the broker's confirm.

        ``headers`` are sent as AMQP headers; ``service`` is reserved (it carries this service's
        name). Raises ``ConfigurationError`` for a type without a route or a bad header, and
        ``PublishError`` when the broker does not confirm.
        """
        target = self._target
        if target is None:
            raise PublishError(
                f"publisher with routes {self._describe_routes()} is not attached to a started "
                "connection: pass event_stream_publisher(publisher) to Connection.start()"
            )
        key = self._key_by_type.get(type(event)) or self.routing_key_for(event)
        if headers:
            check_user_headers(headers)
            sent_headers: Mapping[str, Any] = {**headers, SERVICE_HEADER: target.service}
        else:
            sent_headers = target.base_headers
        await target.transport.publish(target.exchange, key, encode(event), sent_headers)
