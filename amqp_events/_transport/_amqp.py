"""RabbitMQ sessions through aio-pika.

aio-pika opens the connection and channels; the per-message frames (publish, confirm, deliver,
ack) bypass it and aiormq: the lean link (``_lean_link``) reads and writes them by hand on
aiormq's socket. Reconnection is not here: ``ReconnectingTransport`` opens a new session when
one dies.

``AmqpSession`` stacks three layers, one module each: ``AmqpChannels`` (``_amqp_channels``: the
connection, its channels, aiormq's errors as ours), ``AmqpPublishing`` (``_amqp_publishing``:
publishes with confirms and returns) and, here, declaring and consuming. ``AmqpOpener``
(``_amqp_opener``) opens one; ``LeanDelivery`` (``_lean_consume``) is what its consumers get.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from .._errors import BrokerConnectionError
from .._topology import ConsumerSpec, Topology
from .._url import redact
from ._amqp_channels import GONE
from ._amqp_publishing import AmqpPublishing
from ._base import SessionHooks
from ._lean_consume import ConsumingChannel
from ._lean_link import LeanLink


async def _never_called(message: aiormq.abc.DeliveredMessage) -> None:
    raise AssertionError("the lean link takes a hot channel's deliveries")


__all__ = ["AmqpSession"]

log = logging.getLogger(__name__)


class AmqpSession(AmqpPublishing):
    """One connection to RabbitMQ: a channel to publish on (confirms), one to consume on."""

    def __init__(
        self, connection: AbstractConnection, url: str, hooks: SessionHooks, link: LeanLink
    ) -> None:
        super().__init__(connection, url, link)
        self._hooks = hooks
        self._consume: aiormq.abc.AbstractChannel | None = None
        self._consumers: ConsumingChannel | None = None
        connection.close_callbacks.add(self._on_connection_closed)

    def __repr__(self) -> str:
        return f"AmqpSession({redact(self._url)!r})"

    async def open_channels(self) -> None:
        self._hot = self._hot_channel(await self._channel(confirms=True))
        self._consume = consume = await self._channel(confirms=False)
        self._consumers = ConsumingChannel(self._link, consume, asyncio.get_running_loop())
        self._link.register(consume.number, self._consumers)
        consume.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        consume.closing.add_done_callback(self._on_consume_channel_closed)

    def _on_connection_closed(self, _sender: object, exc: BaseException | None) -> None:
        self._lost = True
        self._link.lost(BrokerConnectionError(f"connection to {redact(self._url)} lost: {exc!r}"))
        if not self._closing:
            self._hooks.session_lost(
                self,
                BrokerConnectionError(f"connection to {redact(self._url)} lost: {exc!r}"),
            )

    def _on_consume_channel_closed(self, _future: asyncio.Future[Any]) -> None:
        consumers = self._consumers
        if consumers is not None:
            self._link.unregister(consumers.number, consumers, ConnectionError("channel closed"))
        if self._closing or self._dead:
            return
        # A consume channel closed by the broker takes every consumer with it: start over.
        log.warning("consume channel closed by the broker; reconnecting")
        asyncio.get_running_loop().create_task(self._connection.close())

    def _on_consumer_cancelled(self, frame: spec.Basic.Cancel) -> None:
        if frame.consumer_tag and self._consumers is not None:
            self._consumers.discard(frame.consumer_tag)
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
        channel, consumers = self._consume, self._consumers
        assert channel is not None
        assert consumers is not None
        # Our own tag, routed before Basic.Consume goes out: the first deliveries may come in
        # the same read as its ConsumeOk. aiormq's callback never runs: the link takes them.
        tag = f"amq.ctag-{uuid.uuid4().hex}"
        consumers.add(tag, spec_.callback)
        try:
            with self._translated(f"consuming queue {spec_.queue!r}"):
                # global_=False: RabbitMQ applies the limit to each consumer started after it.
                await channel.basic_qos(prefetch_count=spec_.prefetch, global_=False)
                await channel.basic_consume(
                    spec_.queue, _never_called, exclusive=spec_.exclusive, consumer_tag=tag
                )
        except BaseException:
            consumers.discard(tag)
            raise
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        channel = self._consume
        if channel is None or channel.is_closed:
            return
        try:
            self._write_pending()  # acks before the cancel
            await channel.basic_cancel(consumer_tag)
        except (aiormq.exceptions.AMQPError, *GONE) as exc:
            raise self._gone(f"cancelling consumer {consumer_tag}", exc) from None
        if self._consumers is not None:
            self._consumers.discard(consumer_tag)

    def _write_pending(self) -> None:
        """Acks and publishes waiting for the end of this loop turn, written now: before a
        frame of aiormq's that must come after them."""
        if self._consumers is not None:
            self._consumers.write_acks()
        self._link.flush()

    async def close(self) -> None:
        # Before aiormq's Connection.Close: frames after it are discarded, and an ack lost
        # at a clean shutdown would have its message handled again.
        self._write_pending()
        await super().close()

    async def message_count(self, queue: str) -> int:
        doing = f"counting messages of {queue!r}"
        async with self._own_channel(doing) as channel:
            with self._translated(doing):
                declared = await channel.queue_declare(queue=queue, passive=True)
        return declared.message_count or 0
