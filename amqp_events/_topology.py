"""Topology as data: what a connection declares, kept so a transport can replay it after a
reconnection. Nothing is declared ad hoc deep in a call path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._transport._base import Delivery

ExchangeType = Literal["topic", "direct", "headers", "fanout"]


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: ExchangeType
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


DeliveryCallback = Callable[["Delivery"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    queue: str
    callback: DeliveryCallback
    prefetch: int
    exclusive: bool = False


@dataclass(slots=True)
class Topology:
    """Ordered, duplicate-free declarations: exchanges, then queues, then bindings."""

    exchanges: list[ExchangeSpec] = field(default_factory=list)
    queues: list[QueueSpec] = field(default_factory=list)
    bindings: list[BindingSpec] = field(default_factory=list)

    def add_exchange(self, spec: ExchangeSpec) -> None:
        _add_once(self.exchanges, spec, "exchange")

    def add_queue(self, spec: QueueSpec) -> None:
        _add_once(self.queues, spec, "queue")

    def add_binding(self, spec: BindingSpec) -> None:
        if spec not in self.bindings:
            self.bindings.append(spec)

    def extend(self, other: Topology) -> None:
        for exchange in other.exchanges:
            self.add_exchange(exchange)
        for queue in other.queues:
            self.add_queue(queue)
        for binding in other.bindings:
            self.add_binding(binding)


def _add_once(items: list[Any], spec: ExchangeSpec | QueueSpec, kind: str) -> None:
    from ._errors import ConfigurationError

    for known in items:
        if known.name == spec.name:
            if known != spec:
                raise ConfigurationError(
                    f"{kind} {spec.name!r} declared twice with different settings: "
                    f"{known} and {spec}"
                )
            return
    items.append(spec)
