"""What a service declares, consumes and publishes, read from its setup without a broker.

The plan is the one ``Connection.start`` makes (``plan_of`` over every setup the connection
carries), so what is shown is exactly what the service declares.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from .._connection import Connection
from .._errors import AmqpEventsError
from .._handlers import ResolvedHandler
from .._startup import plan_of, resolve_all
from .._topology import BindingSpec, Topology
from ._errors import CliError

__all__ = ["Consumed", "Published", "ServiceModel", "describe", "type_name"]


@dataclass(frozen=True, slots=True)
class Consumed:
    """One handler on one queue: the key it is bound with, and the event type per key."""

    queue: str
    routing_key: str
    handler: str
    # (concrete routing key or the pattern, event type); a union handler has one per key.
    types: tuple[tuple[str, Any], ...]
    exchanges: tuple[BindingSpec, ...]  # the bindings that bring this key into the queue
    request: bool  # its return value is a response (service_request_consumer)
    response_type: Any = None


@dataclass(frozen=True, slots=True)
class Published:
    """One route of one publisher: an event type sent to an exchange with a routing key."""

    exchange: str
    routing_key: str
    event_type: Any
    destination: str
    cc: tuple[str, ...] = ()
    mandatory: bool = False


@dataclass(slots=True)
class ServiceModel:
    name: str
    topology: Topology
    consumed: list[Consumed] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    transient_queues: set[str] = field(default_factory=set)
    prefetch: int = 20


def type_name(event_type: Any) -> str:
    if event_type is dict:
        return "dict"
    return str(getattr(event_type, "__name__", repr(event_type)))


def describe(connection: Connection) -> ServiceModel:
    """The service's whole setup; a setup error is a CliError naming the service."""
    service = connection.service_name
    try:
        plan = plan_of(service, connection._all_setups())
        resolved = resolve_all(plan)
    except AmqpEventsError as exc:
        raise CliError(f"service {service!r}: {exc}") from None
    model = ServiceModel(service, plan.topology, prefetch=plan.prefetch)
    for queue, consumers in plan.consumers.items():
        if consumers.transient:
            model.transient_queues.add(queue)
        for handler in resolved[queue]:
            model.consumed.append(
                _consumed(queue, handler, plan, request=queue in plan.request_queues)
            )
    for publisher, destination in plan.publishers:
        for route in publisher.routes:
            model.published.append(
                Published(
                    destination.exchange,
                    route.routing_key,
                    route.event_type,
                    destination.description,
                    destination.cc,
                    destination.mandatory,
                )
            )
    for queue_spec in plan.topology.queues:
        if queue_spec.exclusive:
            model.transient_queues.add(queue_spec.name)
    return model


def _consumed(queue: str, handler: ResolvedHandler, plan: Any, *, request: bool) -> Consumed:
    if handler.decoder_by_key is not None:
        types = tuple(
            (key, plan.type_mapping.type_for(key) or dict) for key in handler.decoder_by_key
        )
    else:
        types = tuple((handler.routing_key, t) for t in handler.event_types)
    bindings = tuple(
        b
        for b in plan.topology.bindings
        if b.queue == queue and b.routing_key == handler.routing_key
    )
    response_type = None
    if request:
        try:
            response_type = typing.get_type_hints(handler.handler).get("return")
        except Exception:
            response_type = None
    return Consumed(
        queue, handler.routing_key, handler.name, types, bindings, request, response_type
    )
