"""``MemoryBroker``: one vhost's exchanges, queues, bindings, connections and consumers, and
the AMQP operations on them (declare, bind, publish, consume, settle) with RabbitMQ's
refusals; the queue, exchange and dead-letter rules live in their own modules."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import uuid
from collections.abc import Mapping
from typing import Any, Final

from pamqp import commands as spec

from ..._errors import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    PublishError,
    Unroutable,
)
from ..._topology import BindingSpec, DeliveryCallback, ExchangeSpec, QueueSpec
from .._base import OutgoingProperties
from .._wire import FRAME_MAX_DEFAULT, MAX_MESSAGE_SIZE_DEFAULT
from . import _refusals as refusals
from ._activity import Activity
from ._arguments import (
    QUEUE_EQUIVALENCE_ARGS,
    check_args,
    check_field,
    validate_queue_arguments,
    validate_quorum_queue,
    validate_x_match,
)
from ._connection import MemoryConnection
from ._consumers import Consumer, attach, detach, settled
from ._content import check_limits, received_headers
from ._dead_letters import dead_letter
from ._exchanges import (
    EXCHANGE_TYPES,
    Exchange,
    binding_key,
    predeclared_exchanges,
    route,
    sender_selected_keys,
)
from ._info import ExchangeInfo, MessageSnapshot, QueueInfo
from ._message import Message
from ._queues import Queue
from ._registry import SCHEME, by_url, new_name, parse_memory_url, registry

__all__ = ["MemoryBroker", "broker_for_url"]

log = logging.getLogger("amqp_events.transports.memory")

_MAX_PREFETCH: Final = 65535  # basic.qos prefetch-count is a short


def broker_for_url(url: str) -> MemoryBroker:
    """The broker a ``memory://`` URL names, created and kept for the process if missing.

    ``memory://`` and ``memory:///`` name the process-wide default broker (``"default"``);
    ``memory://orders`` names the broker ``"orders"``, the same one ``MemoryBroker("orders")``
    created if it is still alive.
    """
    name = parse_memory_url(url)
    broker = by_url.get(name) or registry.get(name)
    if broker is None:
        broker = MemoryBroker(name)
        # Created from a URL, nobody else holds it: keep it so the next connection finds it.
        # A broker found alive in the registry is kept alive by whoever created it.
        by_url[name] = broker
    return broker


class MemoryBroker:
    """An in-memory AMQP 0-9-1 broker (one vhost, ``/``) that follows RabbitMQ 3.10's rules.

    Refusals raise ``BrokerError`` with RabbitMQ's reply code and text (404 NOT_FOUND, 403
    ACCESS_REFUSED, 405 RESOURCE_LOCKED, 406 PRECONDITION_FAILED); the broker stays usable
    afterwards (RabbitMQ would also close the channel). Use it from one event loop: consumer
    callbacks run as tasks of the running loop, and TTL and ``x-expires`` timers use it too.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        frame_max: int = FRAME_MAX_DEFAULT,
        max_message_size: int = MAX_MESSAGE_SIZE_DEFAULT,
    ) -> None:
        """Create a broker registered under ``name`` (generated when None); see ``url``.

        ``frame_max`` is what connections negotiate (a content header frame must fit in it)
        and ``max_message_size`` the largest body accepted, RabbitMQ's defaults unless given.
        """
        check_limits(frame_max, max_message_size)
        if name is None:
            name = new_name()
        elif name in registry:
            raise ConfigurationError(
                f"a memory broker named {name!r} already exists; reach it with "
                f"broker_for_url('memory://{name}') instead of creating another"
            )
        self._name = name
        self._frame_max = frame_max
        self._max_message_size = max_message_size
        registry[name] = self
        self._exchanges: dict[str, Exchange] = predeclared_exchanges()
        self._queues: dict[str, Queue] = {}
        self._connections: dict[MemoryConnection, None] = {}
        self._activity = Activity(name)  # consumer callbacks in flight, idle waiters
        self._connection_ids = itertools.count(1)
        self._consumer_ids = itertools.count(1)
        self._stopped = False

    def __repr__(self) -> str:
        return f"<MemoryBroker {self._name!r}: {len(self._queues)} queues>"

    @property
    def name(self) -> str:
        """The name this broker is registered under."""
        return self._name

    @property
    def frame_max(self) -> int:
        """The frame_max its connections negotiate, in bytes (RabbitMQ's default: 131072)."""
        return self._frame_max

    @property
    def max_message_size(self) -> int:
        """The largest body it accepts, in bytes (RabbitMQ 3.10's default: 134217728)."""
        return self._max_message_size

    @property
    def url(self) -> str:
        """``memory://<name>``: the URL that reaches this broker through ``broker_for_url``."""
        return f"{SCHEME}://{self._name}"

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
        self._exchanges = predeclared_exchanges()
        self._activity.tasks.clear()
        self._wake()

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
            detach(consumer)
        unacked, conn._unacked = conn._unacked, {}
        touched: dict[Queue, None] = {}
        for q, message, consumer in unacked.values():
            settled(consumer)
            if not q.deleted:
                q.unacked -= 1
                q.requeue(message)
                touched[q] = None
        for consumer in consumers:
            self._after_consumer_left(consumer.queue)
            touched[consumer.queue] = None  # a single active consumer may have left
        for q in list(conn._exclusive):
            self._delete_queue(q)
        for q in touched:
            if not q.deleted:
                q.after_requeue()
                q.dispatch()
                q.expire_head()
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
            raise refusals.default_exchange_refused()
        if spec.type not in EXCHANGE_TYPES:
            raise BrokerError(503, f"COMMAND_INVALID - unknown exchange type '{spec.type}'")
        x = self._exchanges.get(name)
        if x is None:
            if name.startswith("amq."):
                raise refusals.reserved_name("exchange", name)
            self._exchanges[name] = Exchange(
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
        check_field(what, "type", spec.type, x.type)
        check_field(what, "durable", spec.durable, x.durable)
        check_field(what, "auto_delete", spec.auto_delete, x.auto_delete)
        check_field(what, "internal", spec.internal, x.internal)
        check_args(what, ("alternate-exchange",), spec.arguments, x.arguments)

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
                raise refusals.resource_locked(name)
            what = f"queue '{name}'"
            check_field(what, "durable", spec.durable, q.durable)
            check_field(what, "auto_delete", spec.auto_delete, q.auto_delete)
            check_args(what, QUEUE_EQUIVALENCE_ARGS, spec.arguments, q.arguments)
            q.arm_expiry()  # a redeclaration counts as use for x-expires
            return name
        if spec.name.startswith("amq."):
            raise refusals.reserved_name("queue", name)
        validate_queue_arguments(name, spec.arguments)
        if spec.arguments.get("x-queue-type") == "quorum":
            validate_quorum_queue(name, spec)
        q = Queue(self, spec, name, owner)
        self._queues[name] = q
        if owner is not None:
            owner._exclusive[q] = None
        q.arm_expiry()
        log.debug("memory broker %r: queue %r declared", self._name, name)
        return name

    def bind(self, spec: BindingSpec, *, connection: MemoryConnection | None = None) -> None:
        """Bind a queue to an exchange; binding the same (key, arguments) twice is a no-op."""
        x, q = self._binding_ends(spec, connection)
        if x.type == "headers":
            validate_x_match(spec.arguments)
        key = binding_key(q.name, spec)
        if key in x.bindings:
            return
        x.bindings[key] = (q, spec)
        x.had_binding = True
        x.route_cache.clear()
        q.bindings.add((x.name, key))

    def unbind(self, spec: BindingSpec, *, connection: MemoryConnection | None = None) -> None:
        """Remove a binding; removing one that does not exist is a no-op, as in RabbitMQ."""
        x, q = self._binding_ends(spec, connection)
        key = binding_key(q.name, spec)
        if x.bindings.pop(key, None) is None:
            return
        x.route_cache.clear()
        q.bindings.discard((x.name, key))
        self._maybe_auto_delete_exchange(x)

    def _binding_ends(
        self, spec: BindingSpec, connection: MemoryConnection | None
    ) -> tuple[Exchange, Queue]:
        if connection is not None:
            connection._check_open()
        if spec.exchange == "":
            raise refusals.default_exchange_refused()
        x = self._exchange_or_404(spec.exchange)
        q = self._queue_or_404(spec.queue)
        if connection is not None and q.owner is not None and q.owner is not connection:
            raise refusals.resource_locked(q.name)
        return x, q

    def delete_exchange(self, name: str) -> None:
        """Delete an exchange and every binding from it, as ``exchange.delete`` does (an
        operator's action); 404 if it does not exist, 403 for the default and ``amq.*`` ones."""
        if name == "" or name.startswith("amq."):
            raise BrokerError(
                403, f"ACCESS_REFUSED - operation not permitted on the default exchange {name!r}"
            )
        x = self._exchange_or_404(name)
        for q, _spec in x.bindings.values():
            q.bindings = {(xn, key) for xn, key in q.bindings if xn != name}
        x.bindings.clear()
        x.route_cache.clear()
        self._exchanges.pop(name, None)
        log.debug("memory broker %r: exchange %r deleted", self._name, name)

    def _maybe_auto_delete_exchange(self, x: Exchange) -> None:
        if x.unbound():
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

        Headers arrive as a consumer reads them from RabbitMQ: through pamqp's encoding and
        decoding (a float is a 32-bit float, a datetime whole seconds, a bytes value is sent as
        a string's raw octets, as a foreign client may, and read back as str or bytes).

        Raises ``BrokerError`` 501 FRAME_ERROR for a content header frame over ``frame_max``
        (RabbitMQ closes the connection), 406 for a body over ``max_message_size``, 404 for a
        missing exchange, 403 for an internal one, and ``PublishError`` for a header pamqp
        cannot encode, when ``mandatory`` and no queue matched (RabbitMQ returns it) or when a
        full ``x-overflow: reject-publish`` queue refused it (RabbitMQ nacks it; the other
        queues still got it). Each queue receives its own copy of ``headers``; a missing
        ``message_id`` is generated.
        """
        if type(body) is not bytes:
            body = bytes(body)  # a bytearray could change under the stored message
        if properties is not None:
            content_type = content_type if content_type is not None else properties.content_type
            message_id = message_id if message_id is not None else properties.message_id
            if correlation_id is None:
                correlation_id = properties.correlation_id
            reply_to = reply_to if reply_to is not None else properties.reply_to
            expiration = expiration if expiration is not None else properties.expiration
        if message_id is None:
            message_id = uuid.uuid4().hex  # as aiormq does, before the frame is sent
        hdrs = received_headers(
            exchange,
            routing_key,
            len(body),
            headers,
            spec.Basic.Properties(
                content_type=content_type,
                delivery_mode=delivery_mode,
                correlation_id=correlation_id,
                reply_to=reply_to,
                expiration=None if expiration is None else str(expiration),
                message_id=message_id,
            ),
            frame_max=self._frame_max,
            max_message_size=self._max_message_size,
        )
        x = self._exchanges.get(exchange)
        if x is None:
            raise refusals.no_exchange(exchange)
        if x.internal:
            raise refusals.internal_exchange(exchange)
        if expiration is not None and (type(expiration) is not int or expiration < 0):
            raise BrokerError(
                406, f"PRECONDITION_FAILED - invalid expiration '{expiration}' for message"
            )
        keys = sender_selected_keys(routing_key, hdrs)
        queues = route(x, keys, hdrs, self._exchanges, self._queues)
        if not queues:
            if mandatory:
                raise Unroutable(
                    f"message to exchange {exchange!r} with routing key {routing_key!r} is "
                    "unroutable: no queue is bound to match it (published as mandatory)"
                )
            return 0
        refused: Queue | None = None
        first = True
        for q in queues:
            message = Message(
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
            if not q.enqueue(message):
                refused = q
        if refused is not None:
            raise PublishError(
                f"message to exchange {exchange!r} with routing key {routing_key!r} was nacked: "
                f"queue {refused.name!r} is full ({refused.limits()}, "
                f"x-overflow {refused.overflow})"
            )
        return len(queues)

    # -- consuming and settling ----------------------------------------------------------------

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
            raise refusals.resource_locked(q.name)
        # A single-active-consumer queue refuses exclusive consumers, even with none yet.
        if (exclusive and q.single_active) or (
            q.consumers and (exclusive or any(c.exclusive for c in q.consumers))
        ):
            raise refusals.exclusive_use(q.name)
        tag = f"amq.ctag-{next(self._consumer_ids)}"
        consumer = Consumer(tag, q, conn, callback, prefetch, exclusive)
        conn._consumers[tag] = consumer
        attach(consumer)
        q.disarm_expiry()
        q.dispatch()
        q.expire_head()
        return tag

    def _cancel(self, conn: MemoryConnection, tag: str) -> None:
        consumer = conn._consumers.pop(tag, None)
        if consumer is None:
            return  # RabbitMQ answers cancel-ok for unknown tags too
        detach(consumer)
        q = consumer.queue
        self._after_consumer_left(q)
        if q.single_active and not q.deleted:
            # The next consumer takes over at once. (RabbitMQ 3.10 only activates it: it
            # gets nothing until something else runs the queue, and a publish to the still
            # non-empty queue then crashes the queue process. Not copied.)
            q.dispatch()
        self._wake()

    def _after_consumer_left(self, q: Queue) -> None:
        if q.deleted or q.consumers:
            return
        if q.auto_delete and q.had_consumer:
            self._delete_queue(q)
        else:
            q.arm_expiry()

    def _track(self, task: asyncio.Future[None]) -> None:
        """Keep a consumer callback's task until it is done (for ``wait_until_idle``)."""
        self._activity.track(task)

    def _pop_unacked(self, conn: MemoryConnection, tag: int) -> tuple[Queue, Message, Consumer]:
        entry = conn._unacked.pop(tag, None)
        if entry is None:
            raise refusals.unknown_delivery_tag(tag)
        q, _message, consumer = entry
        settled(consumer)
        if not q.deleted:
            q.unacked -= 1
        return entry

    def _ack(self, conn: MemoryConnection, tag: int) -> None:
        q, _message, _consumer = self._pop_unacked(conn, tag)
        if not q.deleted:
            q.dispatch()
            q.expire_head()
        self._wake()

    def _reject(self, conn: MemoryConnection, tag: int, requeue: bool) -> None:
        q, message, _consumer = self._pop_unacked(conn, tag)
        if not q.deleted:
            if requeue:
                q.requeue(message)
                q.after_requeue()
            else:
                dead_letter(self, q, message, "rejected")
            q.dispatch()
            q.expire_head()
        self._wake()

    # -- deletion ------------------------------------------------------------------------------

    def _delete_queue(self, q: Queue) -> int:
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
            consumer.blocked = False
            consumer.connection._consumers.pop(consumer.tag, None)
            consumer.connection._notify_cancelled(consumer.tag, q.name)
        q.consumers.clear()
        q.active.clear()
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
        q.expire_head()
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
        q.expire_head()
        return [message.snapshot(count=q.quorum) for message in q.ready]

    def get(self, queue: str) -> MessageSnapshot | None:
        """Remove and return the head message of ``queue`` (basic.get, no ack), or None."""
        q = self._queue_or_404(queue)
        q.expire_head()
        q.arm_expiry()  # basic.get counts as use for x-expires
        if not q.ready:
            return None
        message = q.ready.popleft()
        q.expire_head()
        self._wake()
        return message.snapshot(count=q.quorum)

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
        await self._activity.wait(self._is_idle, self._busy, timeout)

    def _is_idle(self) -> bool:
        if self._activity.tasks:
            return False
        if any(conn._unacked for conn in self._connections):
            return False
        return not any(q.consumers and q.ready for q in self._queues.values())

    def _busy(self) -> str:
        unacked = sum(len(conn._unacked) for conn in self._connections)
        waiting = [q.name for q in self._queues.values() if q.consumers and q.ready]
        running = len(self._activity.tasks)
        return (
            f"{running} consumer callbacks running, {unacked} deliveries unacked, "
            f"ready messages in consumed queues {waiting}"
        )

    def _wake(self) -> None:
        self._activity.wake()

    def _queue_or_404(self, name: str) -> Queue:
        q = self._queues.get(name)
        if q is None:
            raise refusals.no_queue(name)
        return q

    def _exchange_or_404(self, name: str) -> Exchange:
        x = self._exchanges.get(name)
        if x is None:
            raise refusals.no_exchange(name)
        return x
