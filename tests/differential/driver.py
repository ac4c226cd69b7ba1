"""One small broker API, implemented twice: over aio-pika against a real RabbitMQ, and over the
in-memory broker's own API. A scenario written against ``Driver`` runs unchanged on both, and
returns what a user could observe as plain data, so that the two results can be compared.

What is observed is normalized the same way on both sides: message bodies as text, headers as
plain dicts and lists, timestamps (``x-death``'s ``time``) replaced by ``"<timestamp>"`` so that
their presence and type still count but their value does not, expirations in milliseconds, and
refusals as ``(reply code, reply text)`` with the vhost's name replaced by ``<vhost>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from amqp_events._errors import BrokerError, PublishError
from amqp_events._transport._base import Delivery
from amqp_events._transport.memory import MemoryBroker, MemoryConnection
from amqp_events._transport.memory._connection import channel_of
from tests.helpers import raw_string_bytes

__all__ = [
    "AmqpDriver",
    "ChannelError",
    "Consumer",
    "Driver",
    "MemoryDriver",
    "Msg",
    "PublishOutcome",
    "normalize",
]

PublishOutcome = Literal["ack", "returned", "nack"]
_VHOST_NAME = re.compile(r"vhost '[^']*'")
TIMESTAMP = "<timestamp>"
WAIT = 5.0  # seconds to wait for something that must happen
QUIET = 0.3  # seconds of silence taken as "nothing more comes"
# The exchange types both brokers know (the memory broker answers others with 503).
ExchangeType = Literal["topic", "direct", "headers", "fanout"]


class ChannelError(Exception):
    """The broker refused an operation (and, on RabbitMQ, closed the channel)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


def normalize(value: Any) -> Any:
    """Plain, comparable data: timestamps become ``"<timestamp>"``, bytes become text."""
    if isinstance(value, datetime):
        return TIMESTAMP
    if isinstance(value, bytes | bytearray):
        # A foreign string that is not UTF-8 arrives as bytes (see the utf8 scenario).
        return bytes(value).decode(errors="backslashreplace")
    if isinstance(value, Mapping):
        return {str(key): normalize(item) for key, item in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    return value


@dataclass(frozen=True)
class Msg:
    """A message as a client sees it, from basic.get or a consumer."""

    body: str
    exchange: str
    routing_key: str
    redelivered: bool
    headers: Mapping[str, Any]
    expiration: int | None  # ms
    # The headers as received, to publish again (not compared: they hold timestamps).
    raw_headers: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def short(self) -> str:
        """The body, with ``!`` when redelivered: enough to compare orders."""
        return self.body + ("!" if self.redelivered else "")

    def as_data(self) -> dict[str, Any]:
        return {
            "body": self.body,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "redelivered": self.redelivered,
            "headers": dict(self.headers),
            "expiration": self.expiration,
        }


def _msg(
    body: bytes,
    exchange: str | None,
    routing_key: str | None,
    redelivered: bool | None,
    headers: Mapping[str, Any] | None,
    expiration: int | None,
) -> Msg:
    return Msg(
        body=body.decode(),
        exchange=exchange or "",
        routing_key=routing_key or "",
        redelivered=bool(redelivered),
        headers=normalize(headers or {}),
        expiration=expiration,
        raw_headers=dict(headers or {}),
    )


@dataclass(frozen=True)
class ExchangeDecl:
    """An exchange.declare, as both drivers pass it on."""

    name: str
    type: ExchangeType
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]


@dataclass(frozen=True)
class QueueDecl:
    """A queue.declare, as both drivers pass it on."""

    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Outgoing:
    """A basic.publish, as both drivers pass it on."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any] | None
    expiration: int | None  # ms
    mandatory: bool


class Consumer(ABC):
    """A consumer with manual acknowledgements; ``received`` lists every delivery in order."""

    def __init__(self) -> None:
        self.received: list[Msg] = []
        self._changed = asyncio.Event()
        self._settled: set[int] = set()

    def _add(self, msg: Msg) -> None:
        self.received.append(msg)
        self._changed.set()

    async def wait_for(self, count: int, within: float = WAIT) -> list[Msg]:
        """All deliveries once there are at least ``count`` (TimeoutError after ``within``)."""
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.received)

    async def quiet(self, period: float = QUIET) -> list[Msg]:
        """All deliveries after ``period`` seconds: for observing that no more arrive."""
        await asyncio.sleep(period)
        return list(self.received)

    @property
    def shorts(self) -> list[str]:
        return [msg.short for msg in self.received]

    def unsettled(self) -> list[int]:
        return [i for i in range(len(self.received)) if i not in self._settled]

    async def ack(self, index: int) -> None:
        self._settled.add(index)
        await self._ack(index)

    async def reject(self, index: int, *, requeue: bool) -> None:
        self._settled.add(index)
        await self._reject(index, requeue)

    async def nack(self, index: int, *, requeue: bool, multiple: bool) -> None:
        """basic.nack: with ``multiple``, every unsettled delivery up to ``index`` too."""
        indexes = [i for i in self.unsettled() if i <= index] if multiple else [index]
        self._settled.update(indexes)
        await self._nack(index, indexes, requeue, multiple)

    @abstractmethod
    async def _ack(self, index: int) -> None: ...

    @abstractmethod
    async def _reject(self, index: int, requeue: bool) -> None: ...

    @abstractmethod
    async def _nack(
        self, index: int, indexes: list[int], requeue: bool, multiple: bool
    ) -> None: ...

    @abstractmethod
    async def cancel(self) -> None:
        """Stop deliveries; unsettled ones can still be settled."""


class Driver(ABC):
    """The broker operations a scenario uses. ``conn`` picks the client connection (0 or 1)."""

    kind: str

    async def __aenter__(self) -> Driver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abstractmethod
    async def close(self) -> None: ...

    async def declare_exchange(
        self,
        name: str,
        type_: ExchangeType,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        await self._declare_exchange(
            ExchangeDecl(name, type_, durable, auto_delete, internal, dict(arguments or {}))
        )

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        conn: int = 0,
    ) -> None:
        decl = QueueDecl(name, durable, exclusive, auto_delete, dict(arguments or {}))
        await self._declare_queue(decl, conn)

    async def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        *,
        conn: int = 0,
    ) -> None:
        await self._bind(queue, exchange, routing_key, dict(arguments or {}), conn)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: str,
        *,
        headers: Mapping[str, Any] | None = None,
        expiration: int | None = None,
        mandatory: bool = False,
    ) -> PublishOutcome:
        """Publish with confirms: ``ack``, ``returned`` (mandatory, unroutable) or ``nack``."""
        return await self._publish(
            Outgoing(exchange, routing_key, body.encode(), headers, expiration, mandatory)
        )

    @abstractmethod
    async def _declare_exchange(self, decl: ExchangeDecl) -> None: ...

    @abstractmethod
    async def _declare_queue(self, decl: QueueDecl, conn: int) -> None: ...

    @abstractmethod
    async def _bind(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any], conn: int
    ) -> None: ...

    @abstractmethod
    async def _publish(self, out: Outgoing) -> PublishOutcome: ...

    @abstractmethod
    async def get(self, queue: str) -> Msg | None:
        """basic.get and ack; None when the queue is empty."""

    @abstractmethod
    async def consume(
        self, queue: str, *, prefetch: int = 0, exclusive: bool = False, conn: int = 0
    ) -> Consumer: ...

    @abstractmethod
    async def close_connection(self, conn: int) -> None:
        """Close client connection ``conn``: its unsettled deliveries go back to their queues."""

    async def drain(self, queue: str) -> list[Msg]:
        """Every ready message of ``queue``, head first, removed."""
        messages = []
        while (msg := await self.get(queue)) is not None:
            messages.append(msg)
        return messages

    async def collect(self, queue: str, count: int, within: float = WAIT) -> list[Msg]:
        """Wait (polling basic.get) until ``count`` messages came from ``queue``, then take
        whatever else arrives within ``QUIET`` seconds: too many shows up too."""
        messages: list[Msg] = []
        async with asyncio.timeout(within):
            while len(messages) < count:
                msg = await self.get(queue)
                if msg is None:
                    await asyncio.sleep(0.02)
                else:
                    messages.append(msg)
        await asyncio.sleep(QUIET)
        return messages + await self.drain(queue)

    @staticmethod
    async def attempt(operation: Awaitable[object]) -> tuple[int, str] | None:
        """Run ``operation``; the broker's refusal as ``(code, text)``, or None if it passed."""
        try:
            await operation
        except ChannelError as error:
            return (error.code, error.text)
        return None


# ---------------------------------------------------------------------------------------------
# RabbitMQ, over aio-pika

_CHANNEL_ERROR_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (aiormq.exceptions.ChannelAccessRefused, 403),
    (aiormq.exceptions.ChannelNotFoundEntity, 404),
    (aiormq.exceptions.ChannelLockedResource, 405),
    (aiormq.exceptions.ChannelPreconditionFailed, 406),
)


def _channel_error(error: aiormq.exceptions.ChannelClosed) -> ChannelError:
    for cls, known in _CHANNEL_ERROR_CODES:
        if isinstance(error, cls):
            code, text = known, str(error.args[0]) if error.args else ""
            break
    else:
        code, text = int(error.args[0]), str(error.args[1])
    return ChannelError(code, _VHOST_NAME.sub("vhost '<vhost>'", text))


class _AmqpConsumer(Consumer):
    def __init__(self, channel: AbstractChannel) -> None:
        super().__init__()
        self.channel = channel
        self.messages: list[AbstractIncomingMessage] = []
        self.tag = ""
        self.queue: aio_pika.abc.AbstractQueue | None = None

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)
        self._add(_incoming(message))

    async def _ack(self, index: int) -> None:
        await self.messages[index].ack()

    async def _reject(self, index: int, requeue: bool) -> None:
        await self.messages[index].reject(requeue=requeue)

    async def _nack(self, index: int, indexes: list[int], requeue: bool, multiple: bool) -> None:
        await self.messages[index].nack(multiple=multiple, requeue=requeue)
        for i in indexes:
            # aio-pika only marks the one it was called on as processed.
            with contextlib.suppress(Exception):
                self.messages[i].lock()

    async def cancel(self) -> None:
        assert self.queue is not None
        await self.queue.cancel(self.tag)


def _incoming(message: AbstractIncomingMessage) -> Msg:
    expiration = message.expiration
    if isinstance(expiration, int | float):
        expiration_ms: int | None = round(expiration * 1000)
    else:
        expiration_ms = None
    return _msg(
        message.body,
        message.exchange,
        message.routing_key,
        message.redelivered,
        message.headers,
        expiration_ms,
    )


class AmqpDriver(Driver):
    """Raw AMQP on a real RabbitMQ: a channel per connection for declarations, a channel
    with publisher confirms for publishing, and a channel of its own for each consumer (so
    that its prefetch applies to it alone). Everything declared is deleted on ``close``."""

    kind = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self._connections: dict[int, AbstractConnection] = {}
        self._channels: dict[int, AbstractChannel] = {}
        self._publisher: AbstractChannel | None = None
        self._queues: dict[str, None] = {}
        self._exchanges: dict[str, None] = {}
        self._consumer_channels: list[AbstractChannel] = []

    async def _connection(self, conn: int) -> AbstractConnection:
        connection = self._connections.get(conn)
        if connection is None:
            connection = await aio_pika.connect(self.url)
            self._connections[conn] = connection
        return connection

    async def _channel(self, conn: int) -> AbstractChannel:
        channel = self._channels.get(conn)
        if channel is None or channel.is_closed:
            channel = await (await self._connection(conn)).channel(publisher_confirms=False)
            self._channels[conn] = channel
        return channel

    async def _publisher_channel(self) -> AbstractChannel:
        if self._publisher is None or self._publisher.is_closed:
            connection = await self._connection(0)
            self._publisher = await connection.channel(
                publisher_confirms=True, on_return_raises=False
            )
        return self._publisher

    @contextlib.asynccontextmanager
    async def _refusals(self) -> Any:
        try:
            yield
        except aiormq.exceptions.ChannelClosed as error:
            raise _channel_error(error) from None

    async def _declare_exchange(self, decl: ExchangeDecl) -> None:
        channel = await self._channel(0)
        async with self._refusals():
            await channel.declare_exchange(
                decl.name,
                decl.type,
                durable=decl.durable,
                auto_delete=decl.auto_delete,
                internal=decl.internal,
                arguments=decl.arguments,
            )
        self._exchanges[decl.name] = None

    async def _declare_queue(self, decl: QueueDecl, conn: int) -> None:
        channel = await self._channel(conn)
        async with self._refusals():
            await channel.declare_queue(
                decl.name,
                durable=decl.durable,
                exclusive=decl.exclusive,
                auto_delete=decl.auto_delete,
                arguments=decl.arguments,
            )
        self._queues[decl.name] = None

    async def _bind(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any], conn: int
    ) -> None:
        channel = await (await self._channel(conn)).get_underlay_channel()
        async with self._refusals():
            await channel.queue_bind(queue, exchange, routing_key=routing_key, arguments=arguments)

    async def _publish(self, out: Outgoing) -> PublishOutcome:
        channel = await (await self._publisher_channel()).get_underlay_channel()
        # The properties MemoryBroker.publish sends by default, so that both content header
        # frames have the same size (FRAME_ERROR reports it).
        properties = spec.Basic.Properties(
            headers=dict(out.headers) if out.headers is not None else None,
            delivery_mode=2,
            expiration=str(out.expiration) if out.expiration is not None else None,
        )
        async with self._refusals():
            try:
                with raw_string_bytes():
                    result = await channel.basic_publish(
                        out.body,
                        exchange=out.exchange,
                        routing_key=out.routing_key,
                        properties=properties,
                        mandatory=out.mandatory,
                    )
            except aiormq.exceptions.DeliveryError:
                return "nack"
            except aiormq.exceptions.ConnectionFrameError as error:
                # RabbitMQ closed the whole connection: the next operation opens another.
                self._connections.pop(0, None)
                self._channels.pop(0, None)
                self._publisher = None
                raise ChannelError(501, str(error.args[0])) from None
        return "returned" if isinstance(result, DeliveredMessage) else "ack"

    async def get(self, queue: str) -> Msg | None:
        channel = await self._channel(0)
        async with self._refusals():
            q = await channel.get_queue(queue, ensure=False)
            message = await q.get(no_ack=False, fail=False)
            if message is None:
                return None
            await message.ack()
        return _incoming(message)

    async def consume(
        self, queue: str, *, prefetch: int = 0, exclusive: bool = False, conn: int = 0
    ) -> Consumer:
        channel = await (await self._connection(conn)).channel(publisher_confirms=False)
        self._consumer_channels.append(channel)
        consumer = _AmqpConsumer(channel)
        async with self._refusals():
            await channel.set_qos(prefetch_count=prefetch)
            consumer.queue = await channel.get_queue(queue, ensure=False)
            consumer.tag = await consumer.queue.consume(
                consumer.on_message, no_ack=False, exclusive=exclusive
            )
        return consumer

    async def close_connection(self, conn: int) -> None:
        connection = self._connections.pop(conn)
        self._channels.pop(conn, None)
        if conn == 0:
            self._publisher = None
        await connection.close()

    async def close(self) -> None:
        for channel in self._consumer_channels:
            with contextlib.suppress(Exception):
                await channel.close()  # unsettled deliveries go back; consumers end quietly
        try:
            if self._queues or self._exchanges:
                connection = await self._connection(0)
                for name in [*self._queues, *self._exchanges]:
                    # A channel per name: a refusal closes it.
                    raw = await (await connection.channel()).get_underlay_channel()
                    with contextlib.suppress(aiormq.exceptions.AMQPError):
                        if name in self._queues:
                            await raw.queue_delete(name)
                        if name in self._exchanges and name:
                            await raw.exchange_delete(name)
                    if not raw.is_closed:
                        await raw.close()
        finally:
            for connection in self._connections.values():
                with contextlib.suppress(Exception):
                    await connection.close()
            self._connections.clear()


# ---------------------------------------------------------------------------------------------
# The in-memory broker, over its own API


class _MemoryConsumer(Consumer):
    def __init__(self, connection: MemoryConnection) -> None:
        super().__init__()
        self.connection = connection
        self.deliveries: list[Delivery] = []
        self.tag = ""

    async def on_delivery(self, delivery: Delivery) -> None:
        # The message's expiration is not on a Delivery: read it from the unsettled entry
        # (gone when the connection closed before this callback ran).
        tag: int = delivery._tag  # type: ignore[attr-defined]
        message = channel_of(self.connection).unsettled(tag)
        expiration = message.expiration if message is not None else None
        self.deliveries.append(delivery)
        self._add(
            _msg(
                delivery.body,
                delivery.exchange,
                delivery.routing_key,
                delivery.redelivered,
                delivery.headers,
                expiration,
            )
        )

    async def _ack(self, index: int) -> None:
        await self.deliveries[index].ack()

    async def _reject(self, index: int, requeue: bool) -> None:
        await self.deliveries[index].reject(requeue=requeue)

    async def _nack(self, index: int, indexes: list[int], requeue: bool, multiple: bool) -> None:
        for i in indexes:
            await self.deliveries[i].reject(requeue=requeue)

    async def cancel(self) -> None:
        self.connection.cancel(self.tag)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The memory broker's refusals as ``ChannelError``, as RabbitMQ's are."""
    try:
        yield
    except BrokerError as error:
        text = str(error).split(": ", 1)[1]
        raise ChannelError(error.reply_code, _VHOST_NAME.sub("vhost '<vhost>'", text)) from None


class MemoryDriver(Driver):
    """The in-memory broker through ``MemoryBroker`` and ``MemoryConnection``."""

    kind = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self._connections: dict[int, MemoryConnection] = {}

    def _connection(self, conn: int) -> MemoryConnection:
        connection = self._connections.get(conn)
        if connection is None:
            connection = self.broker.connect(f"connection-{conn}")
            self._connections[conn] = connection
        return connection

    async def _declare_exchange(self, decl: ExchangeDecl) -> None:
        with _refusals():
            self.broker.declare_exchange(
                decl.name,
                decl.type,
                durable=decl.durable,
                auto_delete=decl.auto_delete,
                internal=decl.internal,
                arguments=decl.arguments,
            )

    async def _declare_queue(self, decl: QueueDecl, conn: int) -> None:
        with _refusals():
            self.broker.declare_queue(
                decl.name,
                durable=decl.durable,
                exclusive=decl.exclusive,
                auto_delete=decl.auto_delete,
                arguments=decl.arguments,
                connection=self._connection(conn),
            )

    async def _bind(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any], conn: int
    ) -> None:
        with _refusals():
            self.broker.bind(
                queue, exchange, routing_key, arguments=arguments, connection=self._connection(conn)
            )

    async def _publish(self, out: Outgoing) -> PublishOutcome:
        try:
            with _refusals():
                self.broker.publish(
                    out.exchange,
                    out.routing_key,
                    out.body,
                    out.headers,
                    mandatory=out.mandatory,
                    expiration=out.expiration,
                )
        except PublishError as error:
            return "returned" if "unroutable" in str(error) else "nack"
        return "ack"

    async def get(self, queue: str) -> Msg | None:
        with _refusals():
            snapshot = self.broker.get(queue)
        if snapshot is None:
            return None
        return _msg(
            snapshot.body,
            snapshot.exchange,
            snapshot.routing_key,
            snapshot.redelivered,
            snapshot.headers,
            snapshot.properties.expiration,
        )

    async def consume(
        self, queue: str, *, prefetch: int = 0, exclusive: bool = False, conn: int = 0
    ) -> Consumer:
        connection = self._connection(conn)
        consumer = _MemoryConsumer(connection)
        with _refusals():
            consumer.tag = connection.consume(
                queue, consumer.on_delivery, prefetch=prefetch, exclusive=exclusive
            )
        await asyncio.sleep(0)  # let deliveries already made reach the consumer
        return consumer

    async def close_connection(self, conn: int) -> None:
        self._connections.pop(conn).close()
        await asyncio.sleep(0)

    async def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        await asyncio.sleep(0)
        self.broker.reset()
