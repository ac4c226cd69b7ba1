"""An in-process AMQP 0-9-1 broker that follows RabbitMQ 3.10's rules, and a transport over it.

``MemoryBroker`` keeps exchanges, queues, bindings, consumers and messages in memory and applies
RabbitMQ's semantics to them: default/direct/topic/fanout/headers routing (with ``CC``/``BCC``
sender-selected keys and alternate exchanges), prefetch, round-robin delivery, requeue at the
original position with the redelivered flag, message and queue TTLs, dead-lettering with
``x-death``, max-length overflow, exclusive and auto-delete queues, and the channel errors
(404, 403, 405, 406) RabbitMQ answers with. ``MemoryTransport`` implements the ``Transport``
protocol over it, so a service runs unchanged against ``memory://`` in tests.

Everything runs on one event loop and one thread; broker methods are synchronous and consumer
callbacks run in their own tasks, as with aiormq.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import secrets
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Final
from urllib.parse import urlsplit

from .._errors import BrokerConnectionError, BrokerError, ConfigurationError, PublishError
from .._routing import topic_matches
from .._topology import (
    BindingSpec,
    DeliveryCallback,
    ExchangeSpec,
    QueueSpec,
)
from ._base import Delivery, OutgoingProperties

__all__ = [
    "ExchangeInfo",
    "MemoryBroker",
    "MemoryConnection",
    "MessageProperties",
    "MessageSnapshot",
    "QueueInfo",
    "broker_for_url",
]

log = logging.getLogger(__name__)

DEFAULT_BROKER_NAME: Final = "default"
_SCHEME: Final = "memory"
_VHOST: Final = "/"
_EXCHANGE_TYPES: Final = frozenset({"direct", "topic", "fanout", "headers"})
# RabbitMQ declares these in every vhost.
_PREDECLARED: Final = (
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)
# Queue arguments RabbitMQ 3.10 compares on redeclaration; any other argument is ignored.
_EQUIVALENCE_ARGS: Final = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
)
_OVERFLOW_MODES: Final = frozenset({"drop-head", "reject-publish", "reject-publish-dlx"})
_X_MATCH_MODES: Final = frozenset({"all", "any", "all-with-x", "any-with-x"})
_ROUTE_CACHE_SIZE: Final = 1024  # routing keys remembered per exchange
_MAX_PREFETCH: Final = 65535  # basic.qos prefetch-count is a short

# ---------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """The AMQP properties of a stored message (``expiration`` in milliseconds)."""

    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: int | None = None
    delivery_mode: int = 2


@dataclass(frozen=True, slots=True)
class MessageSnapshot:
    """A copy of one message as stored in a queue; see ``MemoryBroker.messages`` and ``get``."""

    body: bytes
    exchange: str
    routing_key: str
    headers: Mapping[str, Any]
    properties: MessageProperties
    redelivered: bool


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's settings and counters, as ``rabbitmqctl list_queues`` shows them."""

    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Mapping[str, Any]
    messages_ready: int
    messages_unacknowledged: int
    consumers: int

    @property
    def messages(self) -> int:
        """Ready plus unacknowledged messages, as ``rabbitmqctl``'s ``messages`` column."""
        return self.messages_ready + self.messages_unacknowledged


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """An exchange's settings, as ``rabbitmqctl list_exchanges`` shows them."""

    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Broker state


class _Message:
    """One message in one queue: each queue a message is routed to holds its own copy."""

    __slots__ = (
        "body",
        "content_type",
        "correlation_id",
        "delivery_mode",
        "exchange",
        "expiration",
        "expires_at",
        "headers",
        "message_id",
        "redelivered",
        "reply_to",
        "routing_keys",
        "seq",
    )

    def __init__(
        self,
        body: bytes,
        exchange: str,
        routing_keys: tuple[str, ...],
        headers: dict[str, Any],
        content_type: str | None,
        message_id: str | None,
        correlation_id: str | None,
        reply_to: str | None,
        expiration: int | None,
        delivery_mode: int,
    ) -> None:
        self.body = body
        self.exchange = exchange
        # The publish key first, then CC/BCC keys: RabbitMQ re-routes dead letters with them all.
        self.routing_keys = routing_keys
        self.headers = headers
        self.content_type = content_type
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.delivery_mode = delivery_mode
        self.redelivered = False
        self.expires_at: float | None = None  # time.monotonic() deadline in its queue
        self.seq = 0  # position in its queue, so a requeue goes back where it was

    def with_headers(self, headers: dict[str, Any]) -> _Message:
        return _Message(
            self.body,
            self.exchange,
            self.routing_keys,
            headers,
            self.content_type,
            self.message_id,
            self.correlation_id,
            self.reply_to,
            self.expiration,
            self.delivery_mode,
        )

    def snapshot(self) -> MessageSnapshot:
        return MessageSnapshot(
            body=self.body,
            exchange=self.exchange,
            routing_key=self.routing_keys[0],
            headers=dict(self.headers),
            properties=MessageProperties(
                content_type=self.content_type,
                message_id=self.message_id,
                correlation_id=self.correlation_id,
                reply_to=self.reply_to,
                expiration=self.expiration,
                delivery_mode=self.delivery_mode,
            ),
            redelivered=self.redelivered,
        )


class _Consumer:
    __slots__ = (
        "callback",
        "connection",
        "exclusive",
        "prefetch",
        "queue",
        "tag",
        "unacked",
    )

    def __init__(
        self,
        tag: str,
        queue: _Queue,
        connection: MemoryConnection,
        callback: DeliveryCallback,
        prefetch: int,
        exclusive: bool,
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.connection = connection
        self.callback = callback
        self.prefetch = prefetch
        self.exclusive = exclusive
        self.unacked = 0


_BindKey = tuple[str, str, Hashable]  # (queue, routing key, frozen arguments)


class _Exchange:
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
        self.bindings: dict[_BindKey, tuple[_Queue, BindingSpec]] = {}
        self.had_binding = False
        # routing key -> queues; cleared whenever the bindings change.
        self.route_cache: dict[str, tuple[_Queue, ...]] = {}

    def info(self) -> ExchangeInfo:
        return ExchangeInfo(
            name=self.name,
            type=self.type,
            durable=self.durable,
            auto_delete=self.auto_delete,
            internal=self.internal,
            arguments=dict(self.arguments),
        )


class _Queue:
    __slots__ = (
        "arguments",
        "auto_delete",
        "bindings",
        "consumers",
        "deleted",
        "dlrk",
        "dlx",
        "durable",
        "exclusive",
        "expires",
        "expiry_timer",
        "had_consumer",
        "max_length",
        "message_ttl",
        "name",
        "next_seq",
        "overflow",
        "owner",
        "ready",
        "rr",
        "ttl_loop",
        "ttl_timer",
        "ttl_when",
        "unacked",
    )

    def __init__(self, spec: QueueSpec, name: str, owner: MemoryConnection | None) -> None:
        args = dict(spec.arguments)
        self.name = name
        self.durable = spec.durable
        self.exclusive = spec.exclusive
        self.auto_delete = spec.auto_delete
        self.arguments = args
        self.owner = owner
        self.message_ttl: int | None = args.get("x-message-ttl")
        self.expires: int | None = args.get("x-expires")
        self.dlx: str | None = args.get("x-dead-letter-exchange")
        self.dlrk: str | None = args.get("x-dead-letter-routing-key")
        self.max_length: int | None = args.get("x-max-length")
        self.overflow: str = args.get("x-overflow", "drop-head")
        self.ready: deque[_Message] = deque()
        self.consumers: list[_Consumer] = []
        self.rr = 0  # index of the consumer served next
        self.unacked = 0
        self.had_consumer = False
        self.next_seq = 0
        self.bindings: set[tuple[str, _BindKey]] = set()
        self.deleted = False
        self.ttl_timer: asyncio.TimerHandle | None = None
        self.ttl_when = 0.0
        self.ttl_loop: asyncio.AbstractEventLoop | None = None
        self.expiry_timer: asyncio.TimerHandle | None = None

    def info(self) -> QueueInfo:
        return QueueInfo(
            name=self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=dict(self.arguments),
            messages_ready=len(self.ready),
            messages_unacknowledged=self.unacked,
            consumers=len(self.consumers),
        )

    def cancel_timers(self) -> None:
        if self.ttl_timer is not None:
            self.ttl_timer.cancel()
            self.ttl_timer = None
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None


def _seq_of(message: _Message) -> int:
    return message.seq


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_registry: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()
# Brokers created by broker_for_url stay alive for the process, so that two connections given
# the same URL share one broker even when nothing else holds it in between.
_by_url: dict[str, MemoryBroker] = {}
_generated_names = itertools.count(1)


def broker_for_url(url: str) -> MemoryBroker:
    """The broker a ``memory://`` URL names, created and kept for the process if missing.

    ``memory://`` and ``memory:///`` name the process-wide default broker (``"default"``);
    ``memory://orders`` names the broker ``"orders"``, the same one ``MemoryBroker("orders")``
    created if it is still alive.
    """
    name = _parse_memory_url(url)
    broker = _by_url.get(name) or _registry.get(name)
    if broker is None:
        broker = MemoryBroker(name)
        # Created from a URL, nobody else holds it: keep it so the next connection finds it.
        # A broker found alive in the registry is kept alive by whoever created it.
        _by_url[name] = broker
    return broker


def _parse_memory_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != _SCHEME:
        raise ConfigurationError(
            f"{url!r} is not a memory broker URL: use 'memory://' or 'memory://<name>'"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            f"memory broker URL {url!r} has a path or query; use 'memory://<name>' only"
        )
    return parts.netloc or DEFAULT_BROKER_NAME


# ---------------------------------------------------------------------------------------------
# The broker


class MemoryBroker:
    """An in-memory AMQP 0-9-1 broker (one vhost, ``/``) that follows RabbitMQ 3.10's rules.

    Refusals raise ``BrokerError`` with RabbitMQ's reply code and text (404 NOT_FOUND, 403
    ACCESS_REFUSED, 405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED); the broker stays usable
    afterwards (RabbitMQ would also close the channel). Use it from one event loop: consumer
    callbacks run as tasks of the running loop, and TTL and ``x-expires`` timers use it too.
    """

    def __init__(self, name: str | None = None) -> None:
        """Create a broker registered under ``name`` (generated when None); see ``url``."""
        if name is None:
            name = f"broker-{next(_generated_names)}"
            while name in _registry:
                name = f"broker-{next(_generated_names)}"
        elif name in _registry:
            raise ConfigurationError(
                f"a memory broker named {name!r} already exists; reach it with "
                f"broker_for_url('memory://{name}') instead of creating another"
            )
        self._name = name
        _registry[name] = self
        self._exchanges: dict[str, _Exchange] = {}
        self._queues: dict[str, _Queue] = {}
        self._connections: dict[MemoryConnection, None] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._connection_ids = itertools.count(1)
        self._consumer_ids = itertools.count(1)
        self._stopped = False
        self._declare_predefined()

    def __repr__(self) -> str:
        return f"<MemoryBroker {self._name!r}: {len(self._queues)} queues>"

    @property
    def name(self) -> str:
        """The name this broker is registered under."""
        return self._name

    @property
    def url(self) -> str:
        """``memory://<name>``: the URL that reaches this broker through ``broker_for_url``."""
        return f"{_SCHEME}://{self._name}"

    def reset(self) -> None:
        """Drop every queue, exchange, binding, message and connection (for tests).

        Open connections are dropped without calling their close hooks; their unsettled
        deliveries are forgotten and later settlements of them are ignored by the transport.
        """
        for conn in self._connections:
            conn._closed = True
            conn._consumers.clear()
            conn._unacked.clear()
            conn._exclusive.clear()
        self._connections.clear()
        for q in self._queues.values():
            q.deleted = True
            q.cancel_timers()
        self._queues.clear()
        self._exchanges.clear()
        self._tasks.clear()
        self._declare_predefined()
        self._wake()

    def _declare_predefined(self) -> None:
        self._exchanges[""] = _Exchange("", "direct")
        for name, type_, internal in _PREDECLARED:
            self._exchanges[name] = _Exchange(name, type_, internal=internal)

    # -- connections ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Like ``rabbitmqctl stop_app``: close every connection and refuse new ones until
        ``start()``. Queues and their messages stay."""
        self._stopped = True
        self.close_all_connections("CONNECTION_FORCED - broker forced connection closure")

    def start(self) -> None:
        """Accept connections again after ``stop()``."""
        self._stopped = False

    def connect(self, name: str = "") -> MemoryConnection:
        """Open a connection: it owns exclusive queues, consumers and unsettled deliveries."""
        if self._stopped:
            raise BrokerConnectionError(f"memory broker {self.url} is stopped: connection refused")
        conn = MemoryConnection(self, name or f"connection-{next(self._connection_ids)}")
        self._connections[conn] = None
        log.debug("memory broker %r: connection %r opened", self._name, conn.name)
        return conn

    def close_all_connections(
        self, reason: str = "CONNECTION_FORCED - Closed via close_all_connections"
    ) -> int:
        """Close every connection from the broker side, like ``rabbitmqctl
        close_all_connections``: each one's ``on_close`` hook gets a ``BrokerConnectionError``.

        Returns the number of connections closed.
        """
        connections = list(self._connections)
        for conn in connections:
            self._close_connection(conn)
            error = BrokerConnectionError(
                f"connection {conn.name!r} to {self.url} was closed by the broker: 320 {reason}"
            )
            conn._notify_closed(error)
        if connections:
            log.info("memory broker %r: closed %d connections", self._name, len(connections))
        return len(connections)

    def _close_connection(self, conn: MemoryConnection) -> None:
        if conn._closed:
            return
        conn._closed = True
        self._connections.pop(conn, None)
        consumers = list(conn._consumers.values())
        conn._consumers.clear()
        # Detach consumers before requeueing so nothing is redelivered to this connection.
        for consumer in consumers:
            self._detach_consumer(consumer)
        unacked, conn._unacked = conn._unacked, {}
        touched: dict[_Queue, None] = {}
        for q, message, consumer in unacked.values():
            consumer.unacked -= 1
            if not q.deleted:
                q.unacked -= 1
                self._requeue(q, message)
                touched[q] = None
        for consumer in consumers:
            self._after_consumer_left(consumer.queue)
        for q in list(conn._exclusive):
            self._delete_queue(q)
        for q in touched:
            if not q.deleted:
                self._dispatch(q)
                self._expire_head(q)
        log.debug(
            "memory broker %r: connection %r closed, %d deliveries requeued",
            self._name,
            conn.name,
            len(unacked),
        )
        self._wake()

    # -- declarations --------------------------------------------------------------------------

    def declare_exchange(self, spec: ExchangeSpec) -> None:
        """Declare an exchange, or check that the existing one is equivalent (else 406).

        As in RabbitMQ, only the ``alternate-exchange`` argument is compared on redeclaration.
        """
        name = spec.name
        if name == "":
            raise _default_exchange_refused()
        if spec.type not in _EXCHANGE_TYPES:
            raise BrokerError(503, f"COMMAND_INVALID - unknown exchange type '{spec.type}'")
        x = self._exchanges.get(name)
        if x is None:
            if name.startswith("amq."):
                raise BrokerError(
                    403,
                    f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'",
                )
            self._exchanges[name] = _Exchange(
                name,
                spec.type,
                durable=spec.durable,
                auto_delete=spec.auto_delete,
                internal=spec.internal,
                arguments=spec.arguments,
            )
            log.debug("memory broker %r: exchange %r declared", self._name, name)
            return
        what = f"exchange '{name}'"
        _check_field(what, "type", spec.type, x.type)
        _check_field(what, "durable", spec.durable, x.durable)
        _check_field(what, "auto_delete", spec.auto_delete, x.auto_delete)
        _check_field(what, "internal", spec.internal, x.internal)
        _check_args(what, ("alternate-exchange",), spec.arguments, x.arguments)

    def declare_queue(self, spec: QueueSpec, *, connection: MemoryConnection | None = None) -> str:
        """Declare a queue, or check that the existing one is equivalent; return its name.

        An exclusive queue belongs to ``connection`` (required) and is deleted when it closes;
        another connection declaring it gets 405 RESOURCE_LOCKED. An empty name gets a
        generated ``amq.gen-...`` name.
        """
        if connection is not None:
            connection._check_open()
        if spec.exclusive and connection is None:
            raise ConfigurationError(
                f"queue {spec.name!r} is exclusive: declare it with a connection that owns it"
            )
        owner = connection if spec.exclusive else None
        name = spec.name or f"amq.gen-{secrets.token_urlsafe(16)}"
        q = self._queues.get(name)
        if q is not None:
            if q.owner is not owner:
                raise _resource_locked(name)
            what = f"queue '{name}'"
            _check_field(what, "durable", spec.durable, q.durable)
            _check_field(what, "auto_delete", spec.auto_delete, q.auto_delete)
            _check_args(what, _EQUIVALENCE_ARGS, spec.arguments, q.arguments)
            self._arm_queue_expiry(q)  # a redeclaration counts as use for x-expires
            return name
        if spec.name.startswith("amq."):
            raise BrokerError(
                403, f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"
            )
        _validate_queue_arguments(name, spec.arguments)
        q = _Queue(spec, name, owner)
        self._queues[name] = q
        if owner is not None:
            owner._exclusive[q] = None
        self._arm_queue_expiry(q)
        log.debug("memory broker %r: queue %r declared", self._name, name)
        return name

    def bind(self, spec: BindingSpec, *, connection: MemoryConnection | None = None) -> None:
        """Bind a queue to an exchange; binding the same (key, arguments) twice is a no-op."""
        x, q = self._binding_ends(spec, connection)
        if x.type == "headers":
            _validate_x_match(spec.arguments)
        key = (q.name, spec.routing_key, _freeze(spec.arguments))
        if key in x.bindings:
            return
        x.bindings[key] = (q, spec)
        x.had_binding = True
        x.route_cache.clear()
        q.bindings.add((x.name, key))

    def unbind(self, spec: BindingSpec, *, connection: MemoryConnection | None = None) -> None:
        """Remove a binding; removing one that does not exist is a no-op, as in RabbitMQ."""
        x, q = self._binding_ends(spec, connection)
        key = (q.name, spec.routing_key, _freeze(spec.arguments))
        if x.bindings.pop(key, None) is None:
            return
        x.route_cache.clear()
        q.bindings.discard((x.name, key))
        self._maybe_auto_delete_exchange(x)

    def _binding_ends(
        self, spec: BindingSpec, connection: MemoryConnection | None
    ) -> tuple[_Exchange, _Queue]:
        if connection is not None:
            connection._check_open()
        if spec.exchange == "":
            raise _default_exchange_refused()
        x = self._exchange_or_404(spec.exchange)
        q = self._queue_or_404(spec.queue)
        if connection is not None and q.owner is not None and q.owner is not connection:
            raise _resource_locked(q.name)
        return x, q

    def _maybe_auto_delete_exchange(self, x: _Exchange) -> None:
        if x.auto_delete and x.had_binding and not x.bindings:
            self._exchanges.pop(x.name, None)
            log.debug("memory broker %r: auto-delete exchange %r deleted", self._name, x.name)

    # -- publishing ----------------------------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any] | None = None,
        properties: OutgoingProperties | None = None,
        mandatory: bool = False,
        *,
        content_type: str | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | None = None,
        delivery_mode: int = 2,
    ) -> int:
        """Route a message as a publisher with confirms would; return how many queues got it.

        The keyword arguments, when not None, override the fields of ``properties``; a test
        can write ``broker.publish("", "q", b"{}", expiration=50)``.

        Raises ``BrokerError`` 404 for a missing exchange, 403 for an internal one, and
        ``PublishError`` when ``mandatory`` and no queue matched (RabbitMQ returns it) or when a
        full ``x-overflow: reject-publish`` queue refused it (RabbitMQ nacks it; the other
        queues still got it). Each queue receives its own copy of ``headers``; a missing
        ``message_id`` is generated.
        """
        x = self._exchanges.get(exchange)
        if x is None:
            raise BrokerError(404, f"NOT_FOUND - no exchange '{exchange}' in vhost '{_VHOST}'")
        if x.internal:
            raise BrokerError(
                403,
                f"ACCESS_REFUSED - cannot publish to internal exchange '{exchange}' "
                f"in vhost '{_VHOST}'",
            )
        if type(body) is not bytes:
            body = bytes(body)  # a bytearray could change under the stored message
        hdrs: dict[str, Any] = dict(headers) if headers else {}
        if "CC" in hdrs or "BCC" in hdrs:
            keys: tuple[str, ...] = (routing_key, *_header_routes(hdrs))
            hdrs.pop("BCC", None)  # RabbitMQ strips BCC before delivery
        else:
            keys = (routing_key,)
        if properties is not None:
            content_type = content_type if content_type is not None else properties.content_type
            message_id = message_id if message_id is not None else properties.message_id
            if correlation_id is None:
                correlation_id = properties.correlation_id
            reply_to = reply_to if reply_to is not None else properties.reply_to
            expiration = expiration if expiration is not None else properties.expiration
        if expiration is not None and (type(expiration) is not int or expiration < 0):
            raise BrokerError(
                406, f"PRECONDITION_FAILED - invalid expiration '{expiration}' for message"
            )
        if message_id is None:
            message_id = uuid.uuid4().hex
        queues = self._route(x, keys, hdrs)
        if not queues:
            if mandatory:
                raise PublishError(
                    f"message to exchange {exchange!r} with routing key {routing_key!r} is "
                    "unroutable: no queue is bound to match it (published as mandatory)"
                )
            return 0
        refused: _Queue | None = None
        first = True
        for q in queues:
            message = _Message(
                body,
                exchange,
                keys,
                hdrs if first else dict(hdrs),
                content_type,
                message_id,
                correlation_id,
                reply_to,
                expiration,
                delivery_mode,
            )
            first = False
            if not self._enqueue(q, message):
                refused = q
        if refused is not None:
            raise PublishError(
                f"message to exchange {exchange!r} with routing key {routing_key!r} was nacked: "
                f"queue {refused.name!r} is full (x-max-length {refused.max_length}, "
                f"x-overflow {refused.overflow})"
            )
        return len(queues)

    def _route(
        self, x: _Exchange, keys: tuple[str, ...], headers: Mapping[str, Any]
    ) -> tuple[_Queue, ...]:
        queues = self._route_one(x, keys, headers)
        seen = {x.name}
        # Unroutable messages go on to the alternate exchange, and to its own, once each.
        while not queues and x.alternate is not None and x.alternate not in seen:
            alternate = self._exchanges.get(x.alternate)
            if alternate is None:
                break
            seen.add(alternate.name)
            x = alternate
            queues = self._route_one(x, keys, headers)
        return queues

    def _route_one(
        self, x: _Exchange, keys: tuple[str, ...], headers: Mapping[str, Any]
    ) -> tuple[_Queue, ...]:
        if x.name == "":
            found = (self._queues.get(key) for key in keys)
            return tuple(dict.fromkeys(q for q in found if q is not None))
        if x.type == "headers":
            return tuple(
                dict.fromkeys(
                    q for q, spec in x.bindings.values() if _headers_match(spec.arguments, headers)
                )
            )
        if len(keys) == 1:
            return self._route_key(x, keys[0])
        return tuple(dict.fromkeys(q for key in keys for q in self._route_key(x, key)))

    def _route_key(self, x: _Exchange, key: str) -> tuple[_Queue, ...]:
        cache = x.route_cache
        queues = cache.get(key)
        if queues is None:
            type_ = x.type
            queues = tuple(
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
            cache[key] = queues
        return queues

    def _enqueue(self, q: _Queue, message: _Message) -> bool:
        """Append a routed message to ``q``; False when a full reject-publish queue refused it."""
        ready = q.ready
        max_length = q.max_length
        if max_length is not None and q.overflow != "drop-head" and len(ready) >= max_length:
            if q.overflow == "reject-publish-dlx":
                self._dead_letter(q, message, "maxlen")
            return False
        ttl = q.message_ttl
        expiration = message.expiration
        if expiration is not None and (ttl is None or expiration < ttl):
            ttl = expiration
        if ttl is not None:
            message.expires_at = time.monotonic() + ttl / 1000
        message.seq = q.next_seq
        q.next_seq += 1
        if not ready and q.consumers:
            # A consumer with room takes a fresh message at once, before max-length or a zero
            # TTL could drop it: RabbitMQ's deliver-or-enqueue. (With ready messages, every
            # consumer is already at its prefetch limit.)
            loop = _running_loop()
            consumer = self._next_consumer(q) if loop is not None else None
            if loop is not None and consumer is not None:
                self._deliver(loop, q, consumer, message)
                return True
        ready.append(message)
        if max_length is not None:
            while len(ready) > max_length:
                self._dead_letter(q, ready.popleft(), "maxlen")
        if ready and ready[0].expires_at is not None:
            self._expire_head(q)
        return True

    # -- TTL and dead-lettering ----------------------------------------------------------------

    def _expire_head(self, q: _Queue) -> None:
        """Dead-letter expired messages at the head of ``q`` and arm a timer for the next one.

        RabbitMQ only expires messages at the head of a queue: a message with a short TTL
        behind one without waits for it.
        """
        ready = q.ready
        if not ready or ready[0].expires_at is None:
            return
        now = time.monotonic()
        while ready:
            expires_at = ready[0].expires_at
            if expires_at is None:
                return
            if expires_at > now:
                self._schedule_ttl(q, expires_at)
                return
            self._dead_letter(q, ready.popleft(), "expired")

    def _schedule_ttl(self, q: _Queue, when: float) -> None:
        loop = _running_loop()
        if loop is None:
            return  # no loop: expiry happens at the next operation on the queue
        timer = q.ttl_timer
        if timer is not None:
            if q.ttl_when <= when and q.ttl_loop is loop and not timer.cancelled():
                return  # an earlier timer fires first and reschedules
            timer.cancel()
        q.ttl_when = when
        q.ttl_loop = loop
        q.ttl_timer = loop.call_later(max(0.0, when - time.monotonic()), self._on_ttl_timer, q)

    def _on_ttl_timer(self, q: _Queue) -> None:
        q.ttl_timer = None
        if not q.deleted:
            self._expire_head(q)
            self._wake()

    def _dead_letter(self, q: _Queue, message: _Message, reason: str) -> None:
        """Republish ``message`` from ``q`` to its dead-letter exchange, or drop it."""
        if q.dlx is None:
            return
        x = self._exchanges.get(q.dlx)
        if x is None:
            log.debug(
                "memory broker %r: dead-letter exchange %r of queue %r missing, message dropped",
                self._name,
                q.dlx,
                q.name,
            )
            return
        headers = dict(message.headers)
        _record_death(headers, message, q.name, reason)
        if q.dlrk is not None:
            keys: tuple[str, ...] = (q.dlrk,)
            headers.pop("CC", None)
        else:
            keys = message.routing_keys
        dead = _Message(
            message.body,
            x.name,
            keys,
            headers,
            message.content_type,
            message.message_id,
            message.correlation_id,
            message.reply_to,
            None,  # the per-message TTL is removed; x-death keeps it as original-expiration
            message.delivery_mode,
        )
        queues = self._route(x, keys, headers)
        if reason != "rejected":
            deaths = headers["x-death"]
            # RabbitMQ drops a message that would cycle back without any rejection on the way.
            queues = tuple(target for target in queues if not _is_cycle(target.name, deaths))
        first = True
        for target in queues:
            self._enqueue(target, dead if first else dead.with_headers(dict(headers)))
            first = False

    # -- consuming -----------------------------------------------------------------------------

    def _consume(
        self,
        conn: MemoryConnection,
        queue: str,
        callback: DeliveryCallback,
        prefetch: int,
        exclusive: bool,
    ) -> str:
        conn._check_open()
        if type(prefetch) is not int or not 0 <= prefetch <= _MAX_PREFETCH:
            raise ConfigurationError(
                f"prefetch for queue {queue!r} must be an int from 0 (unlimited) to "
                f"{_MAX_PREFETCH}, got {prefetch!r}"
            )
        q = self._queue_or_404(queue)
        if q.owner is not None and q.owner is not conn:
            raise _resource_locked(q.name)
        if q.consumers and (exclusive or any(c.exclusive for c in q.consumers)):
            raise BrokerError(
                403, f"ACCESS_REFUSED - queue '{q.name}' in vhost '{_VHOST}' in exclusive use"
            )
        tag = f"amq.ctag-{next(self._consumer_ids)}"
        consumer = _Consumer(tag, q, conn, callback, prefetch, exclusive)
        conn._consumers[tag] = consumer
        q.consumers.append(consumer)
        q.had_consumer = True
        if q.expiry_timer is not None:
            q.expiry_timer.cancel()
            q.expiry_timer = None
        self._dispatch(q)
        self._expire_head(q)
        return tag

    def _cancel(self, conn: MemoryConnection, tag: str) -> None:
        consumer = conn._consumers.pop(tag, None)
        if consumer is None:
            return  # RabbitMQ answers cancel-ok for unknown tags too
        self._detach_consumer(consumer)
        self._after_consumer_left(consumer.queue)
        self._wake()

    def _detach_consumer(self, consumer: _Consumer) -> None:
        q = consumer.queue
        consumers = q.consumers
        index = consumers.index(consumer)
        del consumers[index]
        if index < q.rr:
            q.rr -= 1
        if q.rr >= len(consumers):
            q.rr = 0

    def _after_consumer_left(self, q: _Queue) -> None:
        if q.deleted or q.consumers:
            return
        if q.auto_delete and q.had_consumer:
            self._delete_queue(q)
        else:
            self._arm_queue_expiry(q)

    def _dispatch(self, q: _Queue) -> None:
        """Hand ready messages to consumers with room, round-robin, in FIFO order."""
        consumers = q.consumers
        ready = q.ready
        if not consumers or not ready:
            return
        loop = _running_loop()
        if loop is None:
            return  # no loop to run callbacks on: the messages wait for the next dispatch
        now: float | None = None
        while ready and consumers:
            message = ready[0]
            if message.expires_at is not None:
                if now is None:
                    now = time.monotonic()
                if message.expires_at <= now:
                    ready.popleft()
                    self._dead_letter(q, message, "expired")
                    continue
            consumer = self._next_consumer(q)
            if consumer is None:
                return  # every consumer is at its prefetch limit
            ready.popleft()
            self._deliver(loop, q, consumer, message)

    def _next_consumer(self, q: _Queue) -> _Consumer | None:
        """The next consumer with room, round-robin; None if all are at their prefetch."""
        consumers = q.consumers
        count = len(consumers)
        if not count:
            return None
        start = q.rr % count
        for offset in range(count):
            consumer = consumers[(start + offset) % count]
            if consumer.prefetch == 0 or consumer.unacked < consumer.prefetch:
                q.rr = (start + offset + 1) % count
                return consumer
        return None

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        q: _Queue,
        consumer: _Consumer,
        message: _Message,
    ) -> None:
        conn = consumer.connection
        conn._last_tag += 1
        tag = conn._last_tag
        conn._unacked[tag] = (q, message, consumer)
        consumer.unacked += 1
        q.unacked += 1
        delivery = _MemoryDelivery(conn, tag, message)
        # Its own task, as aiormq does: a callback never runs inside publish or ack.
        task = asyncio.ensure_future(consumer.callback(delivery), loop=loop)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                log.error(
                    "memory broker %r: a consumer callback raised; its delivery stays unsettled",
                    self._name,
                    exc_info=error,
                )
        self._wake()

    def _pop_unacked(self, conn: MemoryConnection, tag: int) -> tuple[_Queue, _Message, _Consumer]:
        entry = conn._unacked.pop(tag, None)
        if entry is None:
            raise BrokerError(406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")
        q, _message, consumer = entry
        consumer.unacked -= 1
        if not q.deleted:
            q.unacked -= 1
        return entry

    def _ack(self, conn: MemoryConnection, tag: int) -> None:
        q, _message, _consumer = self._pop_unacked(conn, tag)
        if not q.deleted:
            self._dispatch(q)
            self._expire_head(q)
        self._wake()

    def _reject(self, conn: MemoryConnection, tag: int, requeue: bool) -> None:
        q, message, _consumer = self._pop_unacked(conn, tag)
        if not q.deleted:
            if requeue:
                self._requeue(q, message)
            else:
                self._dead_letter(q, message, "rejected")
            self._dispatch(q)
            self._expire_head(q)
        self._wake()

    def _requeue(self, q: _Queue, message: _Message) -> None:
        """Put ``message`` back where it was in ``q`` (usually the head), marked redelivered."""
        message.redelivered = True
        ready = q.ready
        if not ready or message.seq < ready[0].seq:
            ready.appendleft(message)
        elif message.seq > ready[-1].seq:
            ready.append(message)
        else:
            ready.insert(bisect.bisect_left(ready, message.seq, key=_seq_of), message)

    # -- queue expiry and deletion -------------------------------------------------------------

    def _arm_queue_expiry(self, q: _Queue) -> None:
        """(Re)start the ``x-expires`` countdown of an unused queue."""
        if q.expires is None:
            return
        if q.expiry_timer is not None:
            q.expiry_timer.cancel()
            q.expiry_timer = None
        if q.consumers:
            return
        loop = _running_loop()
        if loop is None:
            return  # declared outside a loop: it cannot expire until used from one
        q.expiry_timer = loop.call_later(q.expires / 1000, self._on_queue_expired, q)

    def _on_queue_expired(self, q: _Queue) -> None:
        q.expiry_timer = None
        if not q.deleted and not q.consumers:
            log.debug("memory broker %r: queue %r expired (x-expires)", self._name, q.name)
            self._delete_queue(q)

    def _delete_queue(self, q: _Queue) -> int:
        if q.deleted:
            return 0
        q.deleted = True
        self._queues.pop(q.name, None)
        for exchange_name, key in q.bindings:
            x = self._exchanges.get(exchange_name)
            if x is not None and x.bindings.pop(key, None) is not None:
                x.route_cache.clear()
                self._maybe_auto_delete_exchange(x)
        q.bindings.clear()
        for consumer in list(q.consumers):
            consumer.connection._consumers.pop(consumer.tag, None)
            consumer.connection._notify_cancelled(consumer.tag, q.name)
        q.consumers.clear()
        q.cancel_timers()
        if q.owner is not None:
            q.owner._exclusive.pop(q, None)
        count = len(q.ready)
        q.ready.clear()
        log.debug("memory broker %r: queue %r deleted", self._name, q.name)
        self._wake()
        return count

    # -- introspection and administration (for tests) ------------------------------------------

    def queue_names(self) -> list[str]:
        """The names of all queues, in declaration order."""
        return list(self._queues)

    def exchange_names(self) -> list[str]:
        """The names of all exchanges, including ``""`` and the predeclared ``amq.*`` ones."""
        return list(self._exchanges)

    def queue_info(self, name: str) -> QueueInfo:
        """Settings and counters of queue ``name``; ``BrokerError`` 404 if it does not exist."""
        q = self._queue_or_404(name)
        self._expire_head(q)
        return q.info()

    def exchange_info(self, name: str) -> ExchangeInfo:
        """Settings of exchange ``name``; ``BrokerError`` 404 if it does not exist."""
        return self._exchange_or_404(name).info()

    def bindings(self, queue: str | None = None) -> list[BindingSpec]:
        """Explicit bindings (not the default exchange's implicit ones), optionally of one queue."""
        return [
            spec
            for x in self._exchanges.values()
            for q, spec in x.bindings.values()
            if queue is None or q.name == queue
        ]

    def messages(self, queue: str) -> list[MessageSnapshot]:
        """Snapshots of the ready messages of ``queue``, head first, without removing them."""
        q = self._queue_or_404(queue)
        self._expire_head(q)
        return [message.snapshot() for message in q.ready]

    def get(self, queue: str) -> MessageSnapshot | None:
        """Remove and return the head message of ``queue`` (basic.get, no ack), or None."""
        q = self._queue_or_404(queue)
        self._expire_head(q)
        self._arm_queue_expiry(q)  # basic.get counts as use for x-expires
        if not q.ready:
            return None
        message = q.ready.popleft()
        self._expire_head(q)
        self._wake()
        return message.snapshot()

    def purge(self, queue: str) -> int:
        """Drop the ready messages of ``queue`` (unacked ones stay); return how many."""
        q = self._queue_or_404(queue)
        count = len(q.ready)
        q.ready.clear()
        self._wake()
        return count

    def delete_queue(self, name: str) -> int:
        """Delete a queue like ``rabbitmqctl delete_queue``; return its ready message count.

        Its consumers are cancelled by the broker: each consumer's connection gets its
        ``on_cancel`` hook called. Its unacked deliveries may still be settled (to no effect).
        """
        return self._delete_queue(self._queue_or_404(name))

    # A timeout parameter, not asyncio.timeout around the call: the error says what is busy.
    async def wait_until_idle(self, timeout: float = 5.0) -> None:
        """Return once no consumer callback runs, no delivery is unacked and no queue that has
        consumers holds ready messages; raise ``TimeoutError`` after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not self._is_idle():
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._idle_waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._idle_waiters:
                            self._idle_waiters.remove(waiter)
        except TimeoutError:
            raise TimeoutError(
                f"memory broker {self._name!r} still busy after {timeout} s: {self._busy()}"
            ) from None

    def _is_idle(self) -> bool:
        if self._tasks:
            return False
        if any(conn._unacked for conn in self._connections):
            return False
        return not any(q.consumers and q.ready for q in self._queues.values())

    def _busy(self) -> str:
        unacked = sum(len(conn._unacked) for conn in self._connections)
        waiting = [q.name for q in self._queues.values() if q.consumers and q.ready]
        return (
            f"{len(self._tasks)} consumer callbacks running, {unacked} deliveries unacked, "
            f"ready messages in consumed queues {waiting}"
        )

    def _wake(self) -> None:
        waiters = self._idle_waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

    def _queue_or_404(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            raise BrokerError(404, f"NOT_FOUND - no queue '{name}' in vhost '{_VHOST}'")
        return q

    def _exchange_or_404(self, name: str) -> _Exchange:
        x = self._exchanges.get(name)
        if x is None:
            raise BrokerError(404, f"NOT_FOUND - no exchange '{name}' in vhost '{_VHOST}'")
        return x


class MemoryConnection:
    """A client connection to a ``MemoryBroker`` (one channel): it owns consumers, unsettled
    deliveries and exclusive queues, all released when it closes.

    Hooks, set by the transport: ``on_close(exc)`` when the broker closes the connection
    (``close_all_connections``) and ``on_cancel(consumer_tag, queue)`` when the broker cancels
    a consumer (its queue was deleted).
    """

    def __init__(self, broker: MemoryBroker, name: str) -> None:
        self._broker = broker
        self.name = name
        self.on_close: Callable[[BaseException], None] | None = None
        self.on_cancel: Callable[[str, str], None] | None = None
        self._closed = False
        self._consumers: dict[str, _Consumer] = {}
        self._unacked: dict[int, tuple[_Queue, _Message, _Consumer]] = {}
        self._exclusive: dict[_Queue, None] = {}
        self._last_tag = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryConnection {self.name!r} to {self._broker.url} ({state})>"

    @property
    def broker(self) -> MemoryBroker:
        """The broker this connection belongs to."""
        return self._broker

    @property
    def closed(self) -> bool:
        """Whether the connection was closed, by the client or by the broker."""
        return self._closed

    def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        prefetch: int = 0,
        exclusive: bool = False,
    ) -> str:
        """Start a consumer on ``queue`` and return its tag.

        ``prefetch`` bounds its unsettled deliveries (0: unlimited). ``exclusive`` fails with
        403 ACCESS_REFUSED if the queue has other consumers, as does consuming a queue that has
        an exclusive consumer; a queue exclusive to another connection gives 405.
        """
        return self._broker._consume(self, queue, callback, prefetch, exclusive)

    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer: no new deliveries; its unsettled ones can still be settled."""
        self._broker._cancel(self, consumer_tag)

    def ack(self, delivery_tag: int) -> None:
        """Acknowledge a delivery; 406 PRECONDITION_FAILED if the tag is unknown or settled."""
        self._broker._ack(self, delivery_tag)

    def reject(self, delivery_tag: int, *, requeue: bool) -> None:
        """Reject a delivery: back to its place in the queue, or dead-lettered (or dropped)."""
        self._broker._reject(self, delivery_tag, requeue)

    def close(self) -> None:
        """Close: requeue unsettled deliveries, cancel consumers, delete exclusive queues."""
        self._broker._close_connection(self)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerConnectionError(f"connection {self.name!r} to {self._broker.url} is closed")

    def _notify_closed(self, error: BaseException) -> None:
        if self.on_close is not None:
            try:
                self.on_close(error)
            except Exception:
                log.exception("on_close hook of connection %r failed", self.name)

    def _notify_cancelled(self, consumer_tag: str, queue: str) -> None:
        if self.on_cancel is not None:
            try:
                self.on_cancel(consumer_tag, queue)
            except Exception:
                log.exception("on_cancel hook of connection %r failed", self.name)


# ---------------------------------------------------------------------------------------------
# Rules as functions


def _headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
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


def _validate_x_match(arguments: Mapping[str, Any]) -> None:
    if "x-match" not in arguments:
        return
    mode = arguments["x-match"]
    if not isinstance(mode, str):
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - Invalid x-match field type {type(mode).__name__} "
            f"(value {mode!r}); expected longstr",
        )
    if mode not in _X_MATCH_MODES:
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - Invalid x-match field value {mode!r}; "
            "expected all, any, all-with-x, or any-with-x",
        )


def _header_routes(headers: Mapping[str, Any]) -> list[str]:
    """The extra routing keys of the ``CC`` and ``BCC`` headers (arrays of strings)."""
    routes: list[str] = []
    for name in ("CC", "BCC"):
        if name not in headers:
            continue
        value = headers[name]
        if not isinstance(value, list):
            raise BrokerError(
                406,
                "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"
                f'"{name}",{_amqp_type(value)}}}',
            )
        routes.extend(key for key in value if isinstance(key, str))
    return routes


def _record_death(headers: dict[str, Any], message: _Message, queue: str, reason: str) -> None:
    """Update ``x-death`` (and the ``x-first-death-*`` headers) the way RabbitMQ 3.10 does."""
    entry: dict[str, Any] = {
        "count": 1,
        "exchange": message.exchange,
        "queue": queue,
        "reason": reason,
        # The publish key plus the CC keys still in the headers (BCC was stripped on publish).
        "routing-keys": [message.routing_keys[0], *_header_routes(headers)],
        "time": datetime.now(UTC).replace(microsecond=0),  # AMQP timestamps are seconds
    }
    if message.expiration is not None:
        entry["original-expiration"] = str(message.expiration)  # a shortstr property on the wire
    if "x-death" not in headers:
        headers["x-first-death-exchange"] = message.exchange
        headers["x-first-death-queue"] = queue
        headers["x-first-death-reason"] = reason
        headers["x-death"] = [entry]
        return
    deaths = headers["x-death"]
    if not isinstance(deaths, list):
        headers["x-death"] = [entry]  # RabbitMQ resets an x-death that is not an array
        return
    # One entry per (queue, reason): a repeat counts up and moves to the front, keeping the
    # time, exchange and routing keys of its first occurrence.
    matched: dict[str, Any] | None = None
    others: list[Any] = []
    seen: set[tuple[Any, Any]] = set()
    for death in deaths:
        if not isinstance(death, Mapping):
            continue
        pair = (death.get("queue"), death.get("reason"))
        if pair in seen:
            continue
        seen.add(pair)
        if pair == (queue, reason):
            matched = dict(death)
        else:
            others.append(death)
    if matched is not None:
        count = matched.get("count")
        matched["count"] = count + 1 if isinstance(count, int) else 1
        entry = matched
    headers["x-death"] = [entry, *others]


def _is_cycle(queue: str, deaths: Iterable[Any]) -> bool:
    """Whether dead-lettering to ``queue`` closes a cycle with no rejection in it."""
    for death in deaths:
        if not isinstance(death, Mapping) or death.get("reason") == "rejected":
            return False  # a client or a rejection took part: not fully automatic
        if death.get("queue") == queue:
            return True
    return False


def _validate_queue_arguments(queue: str, arguments: Mapping[str, Any]) -> None:
    def invalid(key: str, problem: str) -> BrokerError:
        return BrokerError(
            406,
            f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{queue}' in vhost "
            f"'{_VHOST}': {problem}",
        )

    for key, minimum in (("x-message-ttl", 0), ("x-expires", 1), ("x-max-length", 0)):
        if key not in arguments:
            continue
        value = arguments[key]
        if type(value) is not int:
            raise invalid(key, f"{{unacceptable_type,{_amqp_type(value)}}}")
        if value < minimum:
            raise invalid(key, f"{{value_{'zero' if value == 0 else 'negative'},{value}}}")
    for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow"):
        if key in arguments and not isinstance(arguments[key], str):
            raise invalid(key, f"{{unacceptable_type,{_amqp_type(arguments[key])}}}")
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
    if "x-overflow" in arguments and arguments["x-overflow"] not in _OVERFLOW_MODES:
        raise invalid("x-overflow", f"{{unknown_overflow_mode,{arguments['x-overflow']}}}")


def _check_field(what: str, field: str, received: Any, current: Any) -> None:
    if received != current:
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - inequivalent arg '{field}' for {what} in vhost '{_VHOST}': "
            f"received '{_erlang(received)}' but current is '{_erlang(current)}'",
        )


def _check_args(
    what: str, keys: Iterable[str], received: Mapping[str, Any], current: Mapping[str, Any]
) -> None:
    for key in keys:
        new, old = received.get(key), current.get(key)
        if key == "x-queue-type":
            # A classic queue declared without a type is the same as one typed "classic".
            new, old = new or "classic", old or "classic"
        if new is None and old is None:
            continue
        if (
            new is not None
            and old is not None
            and _type_class(new) == _type_class(old)
            and new == old
        ):
            continue
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - inequivalent arg '{key}' for {what} in vhost '{_VHOST}': "
            f"received {_describe(new)} but current is {_describe(old)}",
        )


def _type_class(value: Any) -> str:
    # RabbitMQ compares arguments by type class: every integer width is one class.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return type(value).__name__


def _describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"the value '{_erlang(value)}' of type '{_amqp_type(value)}'"


def _erlang(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _amqp_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "void"
    return type(value).__name__


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


def _default_exchange_refused() -> BrokerError:
    return BrokerError(403, "ACCESS_REFUSED - operation not permitted on the default exchange")


def _resource_locked(queue: str) -> BrokerError:
    return BrokerError(
        405,
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in vhost "
        f"'{_VHOST}'. It could be originally declared on another connection or the exclusive "
        "property value does not match that of the original declaration.",
    )


class _MemoryDelivery(Delivery):
    """A delivery from the memory broker; settling goes straight to the broker."""

    __slots__ = ("_connection", "_tag")

    def __init__(self, connection: MemoryConnection, tag: int, message: _Message) -> None:
        super().__init__(
            message.body,
            message.routing_keys[0],
            message.exchange,
            dict(message.headers),  # a handler's changes must not reach a requeued copy
            message.redelivered,
            message.content_type,
            message.message_id,
            message.correlation_id,
            message.reply_to,
        )
        self._connection = connection
        self._tag = tag

    async def ack(self) -> None:
        if self._connection.closed:
            # The broker requeued the message when the connection closed; nothing to settle.
            log.debug("ack of delivery %d ignored: its connection is closed", self._tag)
            return
        self._connection.ack(self._tag)

    async def reject(self, *, requeue: bool) -> None:
        if self._connection.closed:
            log.debug("reject of delivery %d ignored: its connection is closed", self._tag)
            return
        self._connection.reject(self._tag, requeue=requeue)
