"""RabbitMQ through aio-pika.

aio-pika opens the connection and channels; the per-message paths (publish, deliver, ack) talk to
the underlying aiormq channel directly, which saves an aio-pika message object per message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp import commands as spec

from .._errors import BrokerConnectionError, BrokerError, PublishError
from .._naming import CONTENT_TYPE_JSON, DELIVERY_MODE_PERSISTENT, HEARTBEAT_SECONDS
from .._topology import ConsumerSpec, Topology
from .._url import redact
from ._base import CloseCallback, Delivery, OutgoingProperties

__all__ = ["AmqpTransport"]

log = logging.getLogger(__name__)

_CHANNEL_ERROR_CODES: dict[type[BaseException], int] = {
    aiormq.exceptions.ChannelPreconditionFailed: BrokerError.PRECONDITION_FAILED,
    aiormq.exceptions.ChannelNotFoundEntity: BrokerError.NOT_FOUND,
    aiormq.exceptions.ChannelLockedResource: BrokerError.RESOURCE_LOCKED,
    aiormq.exceptions.ChannelAccessRefused: BrokerError.ACCESS_REFUSED,
}


def broker_error(exc: aiormq.exceptions.AMQPChannelError, doing: str) -> BrokerError:
    """Our BrokerError for an aiormq channel error, keeping the broker's own text."""
    code = _CHANNEL_ERROR_CODES.get(type(exc))
    args = exc.args
    if code is None:
        code = args[0] if args and isinstance(args[0], int) else 0
        args = args[1:]
    text = " ".join(str(a) for a in args) or type(exc).__name__
    return BrokerError(code, f"{doing}: {text}")


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
        try:
            await self._channel.basic_ack(self._tag)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError) as exc:
            # The channel is gone, so the broker requeues the message itself.
            log.warning("ack of %r failed, the broker will redeliver it: %r", self.routing_key, exc)

    async def reject(self, *, requeue: bool) -> None:
        try:
            await self._channel.basic_reject(self._tag, requeue=requeue)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError) as exc:
            log.warning("reject of %r failed; the broker redelivers it: %r", self.routing_key, exc)


class AmqpTransport:
    """The ``Transport`` for RabbitMQ (``amqp://`` and ``amqps://`` URLs)."""

    def __init__(self, url: str, *, connection_name: str, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._connection_name = connection_name
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._consume_channel: aiormq.abc.AbstractChannel | None = None
        self._channels: list[AbstractChannel] = []
        self._consumer_tags: list[str] = []
        self._close_callbacks: list[CloseCallback] = []
        self._closing = False

    def __repr__(self) -> str:
        return f"AmqpTransport({redact(self._url)!r})"

    async def connect(self) -> None:
        options: dict[str, Any] = {}
        if "heartbeat" not in dict(parse_qsl(urlsplit(self._url).query)):
            options["heartbeat"] = HEARTBEAT_SECONDS
        try:
            self._connection = await aio_pika.connect(
                self._url,
                timeout=self._connect_timeout,
                client_properties={"connection_name": self._connection_name},
                **options,
            )
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerConnectionError(
                f"cannot connect to {redact(self._url)}: {type(exc).__name__}: {exc}"
            ) from None
        self._connection.close_callbacks.add(self._on_connection_closed)
        self._publish_channel = await self._open_channel(confirms=True)
        self._consume_channel = await self._open_channel(confirms=False)

    async def _open_channel(self, *, confirms: bool) -> aiormq.abc.AbstractChannel:
        assert self._connection is not None
        channel = await self._connection.channel(
            publisher_confirms=confirms, on_return_raises=confirms
        )
        self._channels.append(channel)
        return await channel.get_underlay_channel()

    def _on_connection_closed(self, _sender: object, exc: BaseException | None) -> None:
        reported: BaseException | None = None
        if not self._closing:
            reported = BrokerConnectionError(
                f"connection to {redact(self._url)} lost: {exc!r}" if exc else "connection lost"
            )
            log.error("%s", reported)
        for callback in self._close_callbacks:
            try:
                callback(reported)
            except Exception:
                log.exception("close listener %r failed", callback)

    def add_close_callback(self, callback: CloseCallback) -> None:
        self._close_callbacks.append(callback)

    async def declare(self, topology: Topology) -> None:
        # A refused declaration closes its channel: use a throwaway one so publishing and
        # consuming channels survive a PRECONDITION_FAILED.
        channel = await self._open_channel(confirms=False)
        try:
            for ex in topology.exchanges:
                doing = f"declaring exchange {ex.name!r}"
                await channel.exchange_declare(
                    exchange=ex.name,
                    exchange_type=ex.type,
                    durable=ex.durable,
                    auto_delete=ex.auto_delete,
                    internal=ex.internal,
                    arguments=dict(ex.arguments),
                )
            for q in topology.queues:
                doing = f"declaring queue {q.name!r}"
                await channel.queue_declare(
                    queue=q.name,
                    durable=q.durable,
                    exclusive=q.exclusive,
                    auto_delete=q.auto_delete,
                    arguments=dict(q.arguments),
                )
            for b in topology.bindings:
                doing = f"binding queue {b.queue!r} to {b.exchange!r} with {b.routing_key!r}"
                await channel.queue_bind(
                    queue=b.queue,
                    exchange=b.exchange,
                    routing_key=b.routing_key,
                    arguments=dict(b.arguments),
                )
        except aiormq.exceptions.AMQPChannelError as exc:
            raise broker_error(exc, doing) from None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def consume(self, spec_: ConsumerSpec) -> None:
        channel = self._consume_channel
        if channel is None:
            raise BrokerConnectionError("not connected: call connect() first")
        callback = spec_.callback

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            await callback(_AmqpDelivery(message, channel))

        try:
            # global_=False: RabbitMQ applies the limit to each consumer started after it.
            await channel.basic_qos(prefetch_count=spec_.prefetch, global_=False)
            result = await channel.basic_consume(spec_.queue, on_message, exclusive=spec_.exclusive)
        except aiormq.exceptions.AMQPChannelError as exc:
            raise broker_error(exc, f"consuming queue {spec_.queue!r}") from None
        if result.consumer_tag:
            self._consumer_tags.append(result.consumer_tag)

    async def stop_consuming(self) -> None:
        channel = self._consume_channel
        tags, self._consumer_tags = self._consumer_tags, []
        if channel is None or channel.is_closed:
            return
        for tag in tags:
            try:
                await channel.basic_cancel(tag)
            except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
                log.debug("cancel of consumer %s failed; the channel is gone", tag)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            raise PublishError(f"cannot publish {routing_key!r} to {exchange!r}: not connected")
        if properties is None:
            props = spec.Basic.Properties(
                content_type=CONTENT_TYPE_JSON,
                delivery_mode=DELIVERY_MODE_PERSISTENT,
                headers=dict(headers),
            )
        else:
            props = spec.Basic.Properties(
                content_type=properties.content_type or CONTENT_TYPE_JSON,
                delivery_mode=DELIVERY_MODE_PERSISTENT,
                headers=dict(headers),
                correlation_id=properties.correlation_id,
                reply_to=properties.reply_to,
                message_id=properties.message_id,
                expiration=str(properties.expiration) if properties.expiration else None,
            )
        try:
            confirmation = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=mandatory,
            )
        except aiormq.exceptions.PublishError as exc:
            raise PublishError(
                f"{routing_key!r} on {exchange!r} is unroutable: no queue is bound for it"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(f"broker refused {routing_key!r} on {exchange!r}: {exc}") from exc
        except aiormq.exceptions.AMQPChannelError as exc:
            raise PublishError(str(broker_error(exc, f"publishing to {exchange!r}"))) from exc
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError) as exc:
            raise PublishError(
                f"publish of {routing_key!r} to {exchange!r} not confirmed: {exc!r}"
            ) from exc
        if not isinstance(confirmation, spec.Basic.Ack):
            raise PublishError(f"broker did not ack {routing_key!r} on {exchange!r}")

    async def close(self) -> None:
        self._closing = True
        connection, self._connection = self._connection, None
        self._publish_channel = self._consume_channel = None
        self._channels.clear()
        if connection is not None and not connection.is_closed:
            await connection.close()
