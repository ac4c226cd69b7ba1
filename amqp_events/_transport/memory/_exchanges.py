"""Exchanges and routing, by RabbitMQ 3.10's rules: the default, direct, topic, fanout and
headers exchanges, sender-selected keys (``CC`` and ``BCC``) and alternate exchanges."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

from ..._errors import BrokerError
from ..._topics import topic_matches
from ..._topology import BindingSpec
from ._arguments import amqp_type
from ._info import ExchangeInfo

if TYPE_CHECKING:
    from ._queues import Queue

__all__ = [
    "EXCHANGE_TYPES",
    "BindKey",
    "Exchange",
    "binding_key",
    "cc_keys",
    "predeclared_exchanges",
    "route",
    "sender_selected_keys",
]

EXCHANGE_TYPES: Final = frozenset({"direct", "topic", "fanout", "headers"})
# RabbitMQ declares these in every vhost: (name, type, internal).
_PREDECLARED: Final = (
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)
_ROUTE_CACHE_SIZE: Final = 1024  # routing keys remembered per exchange

BindKey = tuple[str, str, Hashable]  # (queue, routing key, frozen arguments)


class Exchange:
    """An exchange and its bindings."""

    __slots__ = (
        "alternate",
        "arguments",
        "auto_delete",
        "bindings",
        "durable",
        "had_binding",
        "internal",
        "name",
        "route_cache",
        "type",
    )

    def __init__(
        self,
        name: str,
        type_: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = type_
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, Any] = dict(arguments or {})
        alternate = self.arguments.get("alternate-exchange")
        self.alternate = alternate if isinstance(alternate, str) else None
        self.bindings: dict[BindKey, tuple[Queue, BindingSpec]] = {}
        self.had_binding = False
        # routing key -> queues; cleared whenever the bindings change.
        self.route_cache: dict[str, tuple[Queue, ...]] = {}

    def info(self) -> ExchangeInfo:
        return ExchangeInfo(
            name=self.name,
            type=self.type,
            durable=self.durable,
            auto_delete=self.auto_delete,
            internal=self.internal,
            arguments=dict(self.arguments),
        )

    def add_binding(self, q: Queue, spec: BindingSpec) -> bool:
        """Bind ``q`` as ``spec`` says; False if that binding exists already."""
        key = binding_key(q.name, spec)
        if key in self.bindings:
            return False
        self.bindings[key] = (q, spec)
        self.had_binding = True
        self.route_cache.clear()
        q.bound(self.name, key)
        return True

    def remove_binding(self, key: BindKey) -> bool:
        """Drop the binding ``key`` (its queue keeps its own record); False if missing."""
        if self.bindings.pop(key, None) is None:
            return False
        self.route_cache.clear()
        return True

    def unbound(self) -> bool:
        """Whether an auto-delete exchange lost its last binding, so goes."""
        return self.auto_delete and self.had_binding and not self.bindings


def predeclared_exchanges() -> dict[str, Exchange]:
    """The default exchange and the ``amq.*`` ones, as a fresh vhost has them."""
    exchanges = {"": Exchange("", "direct")}
    for name, type_, internal in _PREDECLARED:
        exchanges[name] = Exchange(name, type_, internal=internal)
    return exchanges


def binding_key(queue: str, spec: BindingSpec) -> BindKey:
    """What tells bindings apart: queue, routing key and arguments (``1``, ``1.0`` and
    ``True`` are different arguments)."""
    return (queue, spec.routing_key, _freeze(spec.arguments))


def _freeze(value: Any) -> Hashable:
    """A hashable form of binding arguments that keeps 1, 1.0 and True apart."""
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=itemgetter(0))
        return ("table", tuple((key, _freeze(item)) for key, item in items))
    if isinstance(value, list | tuple):
        return ("array", tuple(_freeze(item) for item in value))
    try:
        hash(value)
    except TypeError:
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)


# ---------------------------------------------------------------------------------------------
# Routing


def sender_selected_keys(routing_key: str, headers: dict[str, Any]) -> tuple[str, ...]:
    """A message's routing keys: ``routing_key``, then those of its ``CC`` and ``BCC``
    headers (arrays of strings). ``BCC`` is removed from ``headers``, as RabbitMQ strips it
    before delivery."""
    if "CC" not in headers and "BCC" not in headers:
        return (routing_key,)
    keys = (routing_key, *_header_routes(headers))
    headers.pop("BCC", None)
    return keys


def _header_routes(headers: Mapping[str, Any]) -> list[str]:
    routes: list[str] = []
    for name in ("CC", "BCC"):
        if name not in headers:
            continue
        value = headers[name]
        if not isinstance(value, list):
            raise BrokerError(
                406,
                "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"
                f'"{name}",{amqp_type(value)}}}',
            )
        routes.extend(key for key in value if isinstance(key, str))
    return routes


def cc_keys(headers: Mapping[str, Any]) -> list[str]:
    """The keys of a stored message's ``CC`` header (its ``BCC`` is gone by then)."""
    return _header_routes(headers)


def route(
    x: Exchange,
    keys: tuple[str, ...],
    headers: Mapping[str, Any],
    exchanges: Mapping[str, Exchange],
    queues: Mapping[str, Queue],
) -> tuple[Queue, ...]:
    """The queues ``x`` routes a message with ``keys`` and ``headers`` to, each once; when
    none, those of its alternate exchange, and so on (each exchange once)."""
    found = _route_one(x, keys, headers, queues)
    seen = {x.name}
    # Unroutable messages go on to the alternate exchange, and to its own, once each.
    while not found and x.alternate is not None and x.alternate not in seen:
        alternate = exchanges.get(x.alternate)
        if alternate is None:
            break
        seen.add(alternate.name)
        x = alternate
        found = _route_one(x, keys, headers, queues)
    return found


def _route_one(
    x: Exchange, keys: tuple[str, ...], headers: Mapping[str, Any], queues: Mapping[str, Queue]
) -> tuple[Queue, ...]:
    if x.name == "":
        named = (queues.get(key) for key in keys)
        return tuple(dict.fromkeys(q for q in named if q is not None))
    if x.type == "headers":
        return tuple(
            dict.fromkeys(
                q for q, spec in x.bindings.values() if headers_match(spec.arguments, headers)
            )
        )
    if len(keys) == 1:
        return _route_key(x, keys[0])
    return tuple(dict.fromkeys(q for key in keys for q in _route_key(x, key)))


def _route_key(x: Exchange, key: str) -> tuple[Queue, ...]:
    cache = x.route_cache
    found = cache.get(key)
    if found is None:
        type_ = x.type
        found = tuple(
            dict.fromkeys(
                q
                for q, spec in x.bindings.values()
                if type_ == "fanout"
                or (type_ == "direct" and spec.routing_key == key)
                or (type_ == "topic" and topic_matches(spec.routing_key, key))
            )
        )
        if len(cache) >= _ROUTE_CACHE_SIZE:
            cache.clear()
        cache[key] = found
    return found


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """RabbitMQ 3.10's headers exchange match of binding ``arguments`` against ``headers``."""
    mode = arguments.get("x-match", "all")
    with_x = mode == "all-with-x" or mode == "any-with-x"
    match_any = mode == "any" or mode == "any-with-x"
    for key, expected in arguments.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        if key in headers:
            actual = headers[key]
            # A void (None) argument matches on presence; otherwise type and value must agree,
            # so 1 does not match "1" and True does not match 1.
            matched = expected is None or (type(actual) is type(expected) and actual == expected)
        else:
            matched = False
        if match_any:
            if matched:
                return True
        elif not matched:
            return False
    return not match_any
