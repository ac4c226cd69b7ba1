"""``MemoryBroker``: the public face of one vhost (``_vhost``) and its connections
(``_connection``): declarations, publishing (``_publishing``), administration and inspection,
with RabbitMQ's refusals; ``broker_for_url`` finds or creates a broker by URL."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from ..._errors import BrokerConnectionError, ConfigurationError
from ..._topology import BindingSpec, ExchangeSpec, ExchangeType, QueueSpec
from .._base import OutgoingProperties
from .._wire import FRAME_MAX_DEFAULT, MAX_MESSAGE_SIZE_DEFAULT
from ._clock import VirtualClock
from ._connection import Channel, MemoryConnection, channel_of
from ._content import check_limits
from ._info import BindingInfo, ExchangeInfo, MessageProperties, MessageSnapshot, QueueInfo
from ._publishing import publish
from ._registry import SCHEME, by_url, new_name, parse_memory_url, registry
from ._vhost import Vhost

__all__ = ["MemoryBroker", "broker_for_url"]

log = logging.getLogger(__name__)


def broker_for_url(url: str) -> MemoryBroker:
    """The broker a ``memory://`` URL names, created and kept for the process if missing.

    ``memory://`` and ``memory:///`` name the process-wide default broker (``"default"``);
    ``memory://orders`` names the broker ``"orders"``, the same one ``MemoryBroker("orders")``
    created if it is still alive. ``memory://orders?virtual_time=1`` creates it with virtual
    time (see ``MemoryBroker``); a broker found in the other mode is a ``ConfigurationError``.
    """
    name, virtual_time = parse_memory_url(url)
    broker = by_url.get(name) or registry.get(name)
    if broker is None:
        broker = MemoryBroker(name, virtual_time=bool(virtual_time))
        # Created from a URL, nobody else holds it: keep it so the next connection finds it.
        # A broker found alive in the registry is kept alive by whoever created it.
        by_url[name] = broker
    elif virtual_time is not None and virtual_time != broker.virtual_time:
        mode = "virtual" if broker.virtual_time else "real"
        raise ConfigurationError(
            f"{url!r} asks for virtual_time={int(virtual_time)}, but memory broker {name!r} "
            f"already runs on {mode} time; drop the query to reach it as it is"
        )
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
        virtual_time: bool = False,
    ) -> None:
        """Create a broker registered under ``name`` (generated when None); see ``url``.

        ``frame_max`` is what connections negotiate (a content header frame must fit in it)
        and ``max_message_size`` the largest body accepted, RabbitMQ's defaults unless given.

        ``virtual_time=True`` (for tests): whenever it is idle (as ``wait_until_idle`` says),
        its clock jumps to the next message expiry, so TTLs and retry delays pass at once, in
        deadline order. ``x-expires`` and ``x-death`` read that clock too (docs/testing.md).
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
        self._vhost = Vhost(name, virtual_time=virtual_time)
        self._connection_ids = itertools.count(1)
        self._stopped = False

    def __repr__(self) -> str:
        virtual = ", virtual time" if self.virtual_time else ""
        return f"<MemoryBroker {self._name!r}: {len(self._vhost.queues)} queues{virtual}>"

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
    def virtual_time(self) -> bool:
        """Whether its clock skips ahead to the next message expiry while it is idle."""
        return self._vhost.clock.virtual

    @property
    def time_skipped(self) -> float:
        """Seconds its virtual clock has jumped ahead of real time so far (0.0 in real time)."""
        clock = self._vhost.clock
        return clock.skipped if isinstance(clock, VirtualClock) else 0.0

    @property
    def url(self) -> str:
        """``memory://<name>``: the URL that reaches this broker through ``broker_for_url``."""
        return f"{SCHEME}://{self._name}"

    def reset(self) -> None:
        """Drop every queue, exchange, binding, message and connection (for tests).

        Open connections are dropped without calling their close hooks; their unsettled
        deliveries are forgotten and later settlements of them are ignored by the transport.
        """
        self._vhost.reset()

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
        channel = Channel(self._vhost, name or f"connection-{next(self._connection_ids)}", self.url)
        self._vhost.channels[channel] = None
        log.debug("memory broker %r: connection %r opened", self._name, channel.name)
        return MemoryConnection(self, channel)

    def close_all_connections(
        self, reason: str = "CONNECTION_FORCED - Closed via close_all_connections"
    ) -> int:
        """Close every connection from the broker side, like ``rabbitmqctl
        close_all_connections``: each one's ``on_close`` hook gets a ``BrokerConnectionError``.

        Returns the number of connections closed.
        """
        channels = list(self._vhost.channels)
        for channel in channels:
            channel.closed_by_broker(
                BrokerConnectionError(
                    f"connection {channel.name!r} to {self.url} was closed by the broker: "
                    f"320 {reason}"
                )
            )
        if channels:
            log.info("memory broker %r: closed %d connections", self._name, len(channels))
        return len(channels)

    # -- declarations --------------------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str = "topic",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare an exchange of ``type`` (``topic``, ``direct``, ``fanout`` or ``headers``),
        or check that the existing one is equivalent (else 406 PRECONDITION_FAILED).

        As in RabbitMQ, only the ``alternate-exchange`` argument is compared on redeclaration;
        an unknown type gives 503 COMMAND_INVALID, a new ``amq.*`` name 403 ACCESS_REFUSED.
        """
        exchange_type = cast(ExchangeType, type)  # checked by the vhost, as RabbitMQ does
        self._declare_exchange_spec(
            ExchangeSpec(name, exchange_type, durable, auto_delete, internal, dict(arguments or {}))
        )

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        connection: MemoryConnection | None = None,
    ) -> str:
        """Declare a queue, or check that the existing one is equivalent; return its name.

        An exclusive queue belongs to ``connection`` (required) and is deleted when it closes;
        another connection declaring it gets 405 RESOURCE_LOCKED. An empty name gets a
        generated ``amq.gen-...`` name. ``arguments`` are RabbitMQ's ``x-`` queue arguments.
        """
        spec = QueueSpec(name, durable, auto_delete, exclusive, dict(arguments or {}))
        return self._declare_queue_spec(spec, connection=connection)

    def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: Mapping[str, Any] | None = None,
        connection: MemoryConnection | None = None,
    ) -> None:
        """Bind ``queue`` to ``exchange``; binding the same (key, arguments) twice is a no-op.

        ``arguments`` hold a headers exchange's ``x-match`` and header values. Given a
        ``connection``, a queue exclusive to another one gives 405 RESOURCE_LOCKED.
        """
        spec = BindingSpec(queue, exchange, routing_key, dict(arguments or {}))
        self._bind_spec(spec, connection=connection)

    def unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: Mapping[str, Any] | None = None,
        connection: MemoryConnection | None = None,
    ) -> None:
        """Remove a binding; removing one that does not exist is a no-op, as in RabbitMQ."""
        spec = BindingSpec(queue, exchange, routing_key, dict(arguments or {}))
        self._vhost.unbind(spec, self._open_channel(connection))

    def _declare_exchange_spec(self, spec: ExchangeSpec) -> None:
        self._vhost.declare_exchange(spec)

    def _declare_queue_spec(self, spec: QueueSpec, *, connection: MemoryConnection | None) -> str:
        channel = self._open_channel(connection)
        if spec.exclusive and channel is None:
            raise ConfigurationError(
                f"queue {spec.name!r} is exclusive: declare it with a connection that owns it"
            )
        return self._vhost.declare_queue(spec, channel if spec.exclusive else None)

    def _bind_spec(self, spec: BindingSpec, *, connection: MemoryConnection | None) -> None:
        self._vhost.bind(spec, self._open_channel(connection))

    @staticmethod
    def _open_channel(connection: MemoryConnection | None) -> Channel | None:
        if connection is None:
            return None
        channel = channel_of(connection)
        channel.check_open()
        return channel

    def delete_exchange(self, name: str) -> None:
        """Delete an exchange and every binding from it, as ``exchange.delete`` does (an
        operator's action); 404 if it does not exist, 403 for the default and ``amq.*`` ones."""
        self._vhost.delete_exchange(name)

    def delete_queue(self, name: str) -> int:
        """Delete a queue like ``rabbitmqctl delete_queue``; return its ready message count.

        Its consumers are cancelled by the broker: each consumer's connection gets its
        ``on_cancel`` hook called. Its unacked deliveries may still be settled (to no effect).
        """
        return self._vhost.delete_queue(self._vhost.queue_or_404(name))

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
        timestamp: datetime | None = None,
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
        return publish(
            self._vhost,
            exchange,
            routing_key,
            body,
            headers,
            MessageProperties(
                content_type,
                message_id,
                correlation_id,
                reply_to,
                expiration,
                delivery_mode,
                _whole_seconds(timestamp),
            ),
            mandatory=mandatory,
            frame_max=self._frame_max,
            max_message_size=self._max_message_size,
        )

    # -- inspection and administration (for tests) ---------------------------------------------

    def queue_names(self) -> list[str]:
        """The names of all queues, in declaration order."""
        return list(self._vhost.queues)

    def exchange_names(self) -> list[str]:
        """The names of all exchanges, including ``""`` and the predeclared ``amq.*`` ones."""
        return list(self._vhost.exchanges)

    def queue_info(self, name: str) -> QueueInfo:
        """Settings and counters of queue ``name``; ``BrokerError`` 404 if it does not exist."""
        q = self._vhost.queue_or_404(name)
        q.expire_head()
        return q.info()

    def exchange_info(self, name: str) -> ExchangeInfo:
        """Settings of exchange ``name``; ``BrokerError`` 404 if it does not exist."""
        return self._vhost.exchange_or_404(name).info()

    def bindings(self, queue: str | None = None) -> list[BindingInfo]:
        """Explicit bindings (not the default exchange's implicit ones), optionally of one queue."""
        return [
            BindingInfo(spec.queue, spec.exchange, spec.routing_key, dict(spec.arguments))
            for spec in self._vhost.bindings(queue)
        ]

    def messages(self, queue: str) -> list[MessageSnapshot]:
        """Snapshots of the ready messages of ``queue``, head first, without removing them."""
        return self._vhost.queue_or_404(queue).snapshots()

    def get(self, queue: str) -> MessageSnapshot | None:
        """Remove and return the head message of ``queue`` (basic.get, no ack), or None."""
        snapshot = self._vhost.queue_or_404(queue).get()
        if snapshot is not None:
            self._vhost.wake()
        return snapshot

    def purge(self, queue: str) -> int:
        """Drop the ready messages of ``queue`` (unacked ones stay); return how many."""
        count = self._vhost.queue_or_404(queue).purge()
        self._vhost.wake()
        return count

    # A timeout parameter, not asyncio.timeout around the call: the error says what is busy.
    async def wait_until_idle(self, timeout: float = 5.0) -> None:
        """Return once no consumer callback runs, no delivery is unacked and no queue that has
        consumers holds ready messages (on virtual time: and no message waits to expire);
        raise ``TimeoutError`` after ``timeout`` seconds.
        """
        await self._vhost.wait_until_idle(timeout)


def _whole_seconds(when: datetime | None) -> datetime | None:
    """A timestamp as AMQP carries it: whole seconds (pamqp sends the epoch second)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(when.timestamp()), UTC)
