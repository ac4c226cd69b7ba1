"""RabbitMQ sessions through aio-pika.

aio-pika opens the connection and channels; the per-message paths (publish, deliver, ack) talk to
the underlying aiormq channel directly, which saves an aio-pika message object per message.
Reconnection is not here: ``ReconnectingTransport`` opens a new session when one dies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from .._errors import (
    BrokerConnectionError,
    BrokerError,
    PublishError,
    PublishOutcomeUnknown,
    Unroutable,
)
from .._naming import HEARTBEAT_SECONDS
from .._topology import ConsumerSpec, Topology
from .._url import redact
from ._base import Delivery, OutgoingProperties, SessionHooks
from ._wire import (
    UNLIMITED_FRAME_MAX,
    amqp_properties,
    check_header_frame,
    unencodable_headers,
)

__all__ = ["AmqpOpener", "AmqpSession"]

log = logging.getLogger(__name__)

_CHANNEL_ERROR_CODES: dict[type[BaseException], int] = {
    aiormq.exceptions.ChannelPreconditionFailed: BrokerError.PRECONDITION_FAILED,
    aiormq.exceptions.ChannelNotFoundEntity: BrokerError.NOT_FOUND,
    aiormq.exceptions.ChannelLockedResource: BrokerError.RESOURCE_LOCKED,
    aiormq.exceptions.ChannelAccessRefused: BrokerError.ACCESS_REFUSED,
}

# What a dead connection or channel raises in aiormq.
_GONE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


def broker_error(exc: aiormq.exceptions.AMQPChannelError, doing: str) -> BrokerError:
    """Our BrokerError for an aiormq channel error, keeping the broker's own text."""
    code = _CHANNEL_ERROR_CODES.get(type(exc))
    args = exc.args
    if code is None:
        code = args[0] if args and isinstance(args[0], int) else 0
        args = args[1:]
    text = " ".join(str(a) for a in args) or type(exc).__name__
    return BrokerError(code, f"{doing}: {text}")


def _negotiated_frame_max(connection: AbstractConnection) -> int:
    """The frame_max agreed in this connection's tune (aiormq accepts the broker's offer)."""
    underlay = connection.transport
    tune = getattr(underlay.connection, "connection_tune", None) if underlay else None
    frame_max = getattr(tune, "frame_max", None)
    if not isinstance(frame_max, int):
        raise BrokerConnectionError(
            "cannot read frame_max from the connection's tune: is it open? (aiormq changed?)"
        )
    return frame_max or UNLIMITED_FRAME_MAX  # 0: no limit but the 32-bit frame size


class _IdTurn:
    """Publishes of one message_id, one at a time in arrival order."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _AmqpDelivery(Delivery):
    __slots__ = ("_channel", "_tag")

    def __init__(self, message: aiormq.abc.DeliveredMessage, channel: aiormq.abc.AbstractChannel):
        frame = message.delivery
        assert isinstance(frame, spec.Basic.Deliver)  # consumers only get basic.deliver
        props = message.header.properties
        super().__init__(
            message.body,
            frame.routing_key or "",
            frame.exchange or "",
            props.headers or {},
            bool(frame.redelivered),
            props.content_type,
            props.message_id,
            props.correlation_id,
            props.reply_to,
        )
        self._channel = channel
        self._tag: int = frame.delivery_tag or 0

    async def ack(self) -> None:
        self.settled = True
        try:
            await self._channel.basic_ack(self._tag)
        except (aiormq.exceptions.AMQPError, *_GONE) as exc:
            # The channel is gone, so the broker requeues the message itself.
            log.warning("ack of %r failed; the broker redelivers it: %r", self.routing_key, exc)

    async def reject(self, *, requeue: bool) -> None:
        self.settled = True
        try:
            await self._channel.basic_reject(self._tag, requeue=requeue)
        except (aiormq.exceptions.AMQPError, *_GONE) as exc:
            log.warning("reject of %r failed; the broker redelivers it: %r", self.routing_key, exc)

    async def ack_processed(self) -> None:
        await self.ack()
        try:
            # The broker handles a channel's frames in order, so the answer to this no-op RPC
            # (amq.direct exists in every vhost) means the ack was processed, not just sent.
            await self._channel.exchange_declare("amq.direct", exchange_type="direct", passive=True)
        except (aiormq.exceptions.AMQPError, *_GONE) as exc:
            log.warning("could not confirm the ack of %r: %r", self.routing_key, exc)


class AmqpOpener:
    """Opens a session on the first of ``urls`` that answers (multi-host failover)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        connection_name: str,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._urls = list(urls)
        self._connection_name = connection_name
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"AmqpOpener({[redact(u) for u in self._urls]!r})"

    async def __call__(self, hooks: SessionHooks) -> AmqpSession:
        failures = []
        for url in self._urls:
            try:
                return await self._open(url, hooks)
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                failures.append(f"{redact(url)}: {_why_not_open(url, exc)}")
        raise BrokerConnectionError("cannot connect: " + "; ".join(failures))

    async def _open(self, url: str, hooks: SessionHooks) -> AmqpSession:
        options: dict[str, Any] = {}
        if "heartbeat" not in dict(parse_qsl(urlsplit(url).query)):
            options["heartbeat"] = HEARTBEAT_SECONDS
        if self._ssl_context is not None:
            options["ssl_context"] = self._ssl_context
        connection = await aio_pika.connect(
            url,
            timeout=self._connect_timeout,
            client_properties={"connection_name": self._connection_name},
            **options,
        )
        session = AmqpSession(connection, url, hooks)
        try:
            await session.open_channels()
        except BaseException:
            await connection.close()
            raise
        return session


def _why_not_open(url: str, exc: BaseException) -> str:
    """Why connecting to ``url`` failed, in words; aiormq's own text where it is clear."""
    text = str(exc)
    # RabbitMQ answers Connection.Open with Connection.Close (530 NOT_ALLOWED) for a vhost that
    # does not exist or that the user may not access; aiormq reports only the unexpected frame.
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "OpenOk" in text:
        parts = urlsplit(url)
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        user = unquote(parts.username or "guest")
        return (
            f"virtual host {vhost!r} does not exist (or user {user!r} has no permissions on "
            f"it): create it with 'rabbitmqctl add_vhost {vhost}' (or in the management UI) "
            f"and grant the user access with 'rabbitmqctl set_permissions -p "
            f'{vhost} {user} ".*" ".*" ".*"\''
        )
    return f"{type(exc).__name__}: {text}"


class AmqpSession:
    """One connection to RabbitMQ: a channel to publish on (confirms), one to consume on."""

    def __init__(self, connection: AbstractConnection, url: str, hooks: SessionHooks) -> None:
        self._connection = connection
        self._url = url
        self._hooks = hooks
        self._closing = False
        self._lost = False  # aio-pika's is_closed stays False when the broker closed us
        self._publish: aiormq.abc.AbstractChannel | None = None
        self._consume: aiormq.abc.AbstractChannel | None = None
        self._publish_lock = asyncio.Lock()
        self._frame_max = _negotiated_frame_max(connection)
        # The last headers object whose content header frame fit: Publisher.publish without
        # user headers passes the same dict every time, so checking it once is enough.
        self._fitting_headers: object = None
        # Explicit message ids with a publish in flight: aiormq matches a basic.return to its
        # publish by message_id, so a second publish of one id waits for the first's outcome.
        self._waiting_ids: dict[str, _IdTurn] = {}
        connection.close_callbacks.add(self._on_connection_closed)

    def __repr__(self) -> str:
        return f"AmqpSession({redact(self._url)!r})"

    @property
    def is_open(self) -> bool:
        return not (self._closing or self._lost or self._connection.is_closed)

    @property
    def frame_max(self) -> int:
        return self._frame_max

    @property
    def _dead(self) -> bool:
        return self._lost or self._connection.is_closed

    async def _channel(self, *, confirms: bool) -> aiormq.abc.AbstractChannel:
        try:
            channel = await self._connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )
        except RuntimeError as exc:
            # aiormq's word for "this connection is closed", before aio-pika's close callback
            # has told us so.
            self._lost = True
            raise BrokerConnectionError(
                f"opening a channel on {redact(self._url)}: {exc}"
            ) from None
        return await channel.get_underlay_channel()

    async def open_channels(self) -> None:
        self._publish = await self._channel(confirms=True)
        self._consume = await self._channel(confirms=False)
        self._consume.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        self._consume.closing.add_done_callback(self._on_consume_channel_closed)

    def _on_connection_closed(self, _sender: object, exc: BaseException | None) -> None:
        self._lost = True
        if not self._closing:
            self._hooks.session_lost(
                self,
                BrokerConnectionError(f"connection to {redact(self._url)} lost: {exc!r}"),
            )

    def _on_consume_channel_closed(self, _future: asyncio.Future[Any]) -> None:
        if self._closing or self._dead:
            return
        # A consume channel closed by the broker takes every consumer with it: start over.
        log.warning("consume channel closed by the broker; reconnecting")
        asyncio.get_running_loop().create_task(self._connection.close())

    def _on_consumer_cancelled(self, frame: spec.Basic.Cancel) -> None:
        if frame.consumer_tag:
            self._hooks.consumer_cancelled(self, frame.consumer_tag)

    def _gone(self, doing: str, exc: BaseException) -> BrokerConnectionError:
        return BrokerConnectionError(f"{doing} on {redact(self._url)}: connection lost ({exc!r})")

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """aiormq's errors as ours: a refusal is a BrokerError, a dead link a connection error."""
        try:
            yield
        except aiormq.exceptions.AMQPChannelError as exc:
            raise (self._gone(doing, exc) if self._dead else broker_error(exc, doing)) from None
        except _GONE as exc:
            raise self._gone(doing, exc) from None

    @asynccontextmanager
    async def _own_channel(self, doing: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        # A refusal closes its channel: one of its own keeps the publish and consume channels
        # alive through a PRECONDITION_FAILED or NOT_FOUND.
        with self._translated(doing):
            channel = await self._channel(confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def declare(self, topology: Topology) -> None:
        async with self._own_channel("declaring") as channel:
            for ex in topology.exchanges:
                with self._translated(f"declaring exchange {ex.name!r}"):
                    await channel.exchange_declare(
                        exchange=ex.name,
                        exchange_type=ex.type,
                        durable=ex.durable,
                        auto_delete=ex.auto_delete,
                        internal=ex.internal,
                        arguments=dict(ex.arguments),
                    )
            for q in topology.queues:
                with self._translated(f"declaring queue {q.name!r}"):
                    await channel.queue_declare(
                        queue=q.name,
                        durable=q.durable,
                        exclusive=q.exclusive,
                        auto_delete=q.auto_delete,
                        arguments=dict(q.arguments),
                    )
            for b in topology.bindings:
                doing = f"binding queue {b.queue!r} to {b.exchange!r} with {b.routing_key!r}"
                with self._translated(doing):
                    await channel.queue_bind(
                        queue=b.queue,
                        exchange=b.exchange,
                        routing_key=b.routing_key,
                        arguments=dict(b.arguments),
                    )

    async def consume(self, spec_: ConsumerSpec) -> str:
        channel = self._consume
        assert channel is not None
        callback = spec_.callback

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            await callback(_AmqpDelivery(message, channel))

        with self._translated(f"consuming queue {spec_.queue!r}"):
            # global_=False: RabbitMQ applies the limit to each consumer started after it.
            await channel.basic_qos(prefetch_count=spec_.prefetch, global_=False)
            result = await channel.basic_consume(spec_.queue, on_message, exclusive=spec_.exclusive)
        assert result.consumer_tag is not None
        return result.consumer_tag

    async def cancel(self, consumer_tag: str) -> None:
        channel = self._consume
        if channel is None or channel.is_closed:
            return
        try:
            await channel.basic_cancel(consumer_tag)
        except (aiormq.exceptions.AMQPError, *_GONE) as exc:
            raise self._gone(f"cancelling consumer {consumer_tag}", exc) from None

    async def message_count(self, queue: str) -> int:
        doing = f"counting messages of {queue!r}"
        async with self._own_channel(doing) as channel:
            with self._translated(doing):
                declared = await channel.queue_declare(queue=queue, passive=True)
        return declared.message_count or 0

    async def _publish_channel(self) -> aiormq.abc.AbstractChannel:
        channel = self._publish
        if channel is not None and not channel.is_closed:
            return channel
        if self._dead:
            raise BrokerConnectionError(f"connection to {redact(self._url)} is closed")
        async with self._publish_lock:  # after a channel error, one task reopens it
            if self._publish is None or self._publish.is_closed:
                try:
                    self._publish = await self._channel(confirms=True)
                except _GONE as exc:
                    raise self._gone("reopening the publish channel", exc) from None
            return self._publish

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
    ) -> None:
        if properties is not None or headers is not self._fitting_headers:
            check_header_frame(exchange, routing_key, headers, properties, self._frame_max)
            if properties is None:
                self._fitting_headers = headers
        message_id = properties.message_id if properties is not None else None
        if not message_id:
            await self._publish_now(
                exchange, routing_key, body, headers, properties, mandatory, confirm_timeout
            )
            return
        turn = self._waiting_ids.get(message_id)
        if turn is None:
            turn = self._waiting_ids[message_id] = _IdTurn()
        turn.users += 1
        try:
            async with turn.lock:
                await self._publish_now(
                    exchange, routing_key, body, headers, properties, mandatory, confirm_timeout
                )
        finally:
            turn.users -= 1
            if not turn.users:
                del self._waiting_ids[message_id]

    async def _publish_now(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
    ) -> None:
        channel = self._publish
        if channel is None or channel.is_closed:
            channel = await self._publish_channel()
        props = amqp_properties(headers, properties)
        try:
            confirmation = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=mandatory,
                timeout=confirm_timeout,
            )
        except aiormq.exceptions.PublishError as exc:
            raise Unroutable(
                f"message to exchange {exchange!r} with routing key {routing_key!r} is "
                "unroutable: no queue is bound to match it (published as mandatory)"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(f"broker refused {routing_key!r} on {exchange!r}: {exc}") from exc
        except aiormq.exceptions.AMQPChannelError as exc:
            if self._dead:
                raise self._gone(f"publishing {routing_key!r}", exc) from None
            refused = broker_error(exc, f"publishing to {exchange!r}")
            raise PublishError(str(refused), reply_code=refused.reply_code) from None
        except _GONE as exc:
            raise self._gone(f"publishing {routing_key!r}", exc) from None
        except TimeoutError:
            raise PublishOutcomeUnknown(
                f"{routing_key!r} to {exchange!r} not confirmed within {confirm_timeout}s: "
                "the broker may or may not have it"
            ) from None
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            # pamqp failed to encode the properties: nothing was sent (the frame check above
            # encodes them first, so this is a last resort).
            raise unencodable_headers(exchange, routing_key, headers, exc) from None
        except Exception as exc:
            # aiormq fails what is pending on a closing connection with a bare Exception().
            if self._closing or self._dead:
                raise self._gone(f"publishing {routing_key!r}", exc) from None
            raise PublishError(f"{routing_key!r} to {exchange!r} not confirmed: {exc!r}") from exc
        if not isinstance(confirmation, spec.Basic.Ack):
            raise PublishError(f"broker did not ack {routing_key!r} on {exchange!r}")

    async def close(self) -> None:
        self._closing = True
        if not self._dead:
            try:
                await self._connection.close()
            except (aiormq.exceptions.AMQPError, *_GONE) as exc:
                log.debug("closing %r: %r", self, exc)
