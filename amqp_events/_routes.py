"""Routes: which pydantic event type is published with which routing key, both ways."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from ._errors import ConfigurationError
from ._topics import validate_routing_key

MAX_SCHEMA_VERSION = 1_000_000  # a bigger "version" is not one

__all__ = ["Route", "TypeMapping"]


@dataclass(frozen=True, slots=True)
class Route:
    """Maps an event type (a pydantic model) to the routing key it is published with.

    ``Route(OrderCreated, "Order.Created")``: the routing key carries the event's identity on the
    wire, exactly as goamqp's ``Route{Type: OrderCreated{}, Key: "Order.Created"}``. A route
    counts only where it is used: in its ``Publisher``, or in ``with_type_mapping`` on a
    connection; creating one has no effect elsewhere.

    ``version`` is the event's schema version (1 by default): it travels with each event, and a
    consumer that knows the route expects it (older versions are upcast, see
    ``with_upcaster``; newer ones are dead-lettered).
    """

    event_type: type[BaseModel]
    routing_key: str
    version: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.event_type, type) and issubclass(self.event_type, BaseModel)):
            raise ConfigurationError(
                f"Route({self.event_type!r}, {self.routing_key!r}): the event type must be a "
                "pydantic model class (a subclass of pydantic.BaseModel); dict is only for "
                "handlers that read the raw JSON, a routed event needs a model"
            )
        validate_routing_key(self.routing_key, what=f"Route for {self.event_type.__name__}")
        if type(self.version) is not int or not 1 <= self.version <= MAX_SCHEMA_VERSION:
            raise ConfigurationError(
                f"Route for {self.event_type.__name__}: version must be an int from 1 to "
                f"{MAX_SCHEMA_VERSION}, got {self.version!r}"
            )
        if "*" in self.routing_key.split(".") or "#" in self.routing_key.split("."):
            raise ConfigurationError(
                f"Route for {self.event_type.__name__}: routing key {self.routing_key!r} is a "
                "pattern; a published event needs a concrete key (no '*' or '#' words)"
            )


class TypeMapping:
    """Both directions of a set of routes; a type or a key may appear only once."""

    __slots__ = ("_key_by_type", "_type_by_key", "_version_by_key")

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._key_by_type: dict[type[BaseModel], str] = {}
        self._type_by_key: dict[str, type[BaseModel]] = {}
        self._version_by_key: dict[str, int] = {}
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        known_key = self._key_by_type.get(route.event_type)
        if known_key is not None and known_key != route.routing_key:
            raise ConfigurationError(
                f"Route for {route.event_type.__name__} declared twice: "
                f"{known_key!r} and {route.routing_key!r}"
            )
        known_type = self._type_by_key.get(route.routing_key)
        if known_type is not None and known_type is not route.event_type:
            raise ConfigurationError(
                f"Routing key {route.routing_key!r} routed to two types: "
                f"{known_type.__name__} and {route.event_type.__name__}; "
                "a consumer could not tell them apart"
            )
        known_version = self._version_by_key.get(route.routing_key)
        if known_version is not None and known_version != route.version:
            raise ConfigurationError(
                f"Routing key {route.routing_key!r} has two versions: {known_version} and "
                f"{route.version}; one connection knows one version of an event"
            )
        self._key_by_type[route.event_type] = route.routing_key
        self._type_by_key[route.routing_key] = route.event_type
        self._version_by_key[route.routing_key] = route.version

    def merge(self, other: TypeMapping) -> None:
        for route in other.routes():
            self.add(route)

    def key_for(self, event_type: type[BaseModel]) -> str | None:
        return self._key_by_type.get(event_type)

    def type_for(self, routing_key: str) -> type[BaseModel] | None:
        return self._type_by_key.get(routing_key)

    def version_for(self, routing_key: str) -> int:
        """The schema version this mapping's route for ``routing_key`` has (1 without one)."""
        return self._version_by_key.get(routing_key, 1)

    def knows(self, routing_key: str) -> bool:
        return routing_key in self._version_by_key

    def routes(self) -> list[Route]:
        return [Route(t, k, self._version_by_key[k]) for t, k in self._key_by_type.items()]
