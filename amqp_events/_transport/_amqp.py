"""RabbitMQ sessions through aio-pika.

aio-pika opens the connection and channels; the per-message paths (publish, deliver, ack) talk to
the underlying aiormq channel directly, which saves an aio-pika message object per message.
Reconnection is not here: ``ReconnectingTransport`` opens a new session when one dies.

``AmqpSession`` stacks three layers, one module each: ``AmqpChannels`` (``_amqp_channels``: the
connection, its channels, aiormq's errors as ours), ``AmqpPublishing`` (``_amqp_publishing``:
publishes with confirms and returns) and, here, declaring and consuming. ``AmqpOpener``
(``_amqp_opener``) opens one; ``AmqpDelivery`` (``_amqp_delivery``) is what its consumers get.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from .._errors import BrokerConnectionError
from .._topology import ConsumerSpec, Topology
from .._url import redact
from ._amqp_channels import GONE
from ._amqp_delivery import AmqpDelivery
from ._amqp_publishing import AmqpPublishing
from ._base import SessionHooks

__all__ = ["AmqpSession"]

log = logging.getLogger(__name__)


class AmqpSession(AmqpPublishing):
    """One connection to RabbitMQ: a channel to publish on (confirms), one to consume on."""

    def __init__(self, connection: AbstractConnection, url: str, hooks: SessionHooks) -> None:
        super().__init__(connection, url)
        self._hooks = hooks
        self._consume: aiormq.abc.AbstractChannel | None = None
        connection.close_callbacks.add(self._on_connection_closed)

    def __repr__(self) -> str:
        return f"AmqpSession({redact(self._url)!r})"

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
            await callback(AmqpDelivery(message, channel))

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
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            raise self._gone(f"cancelling consumer {consumer_tag}", exc) from None

    async def message_count(self, queue: str) -> int:
        doing = f"counting messages of {queue!r}"
        async with self._own_channel(doing) as channel:
            with self._translated(doing):
                declared = await channel.queue_declare(queue=queue, passive=True)
        return declared.message_count or 0
