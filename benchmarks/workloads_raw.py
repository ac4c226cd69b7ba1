"""The baseline: the workloads written directly on aio-pika, as a careful user would."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from .client import Client
from .common import (
    EXCHANGE,
    PREFETCH,
    QUEUE_EXPIRES_MS,
    ROUTING_KEY,
    LatencyTally,
    Order,
    Publish,
    Sample,
    Tally,
    measure_latency,
    queue_name,
    timed_pipelined,
    timed_sequential,
)

__all__ = ["CLIENT"]


async def _publisher(connection: AbstractConnection) -> Publish:
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)

    async def publish(order: Order) -> object:
        message = aio_pika.Message(
            order.model_dump_json().encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
        )
        # mandatory=False as the others: aio-pika defaults to True (amqp-events, not)
        return await exchange.publish(message, routing_key=ROUTING_KEY, mandatory=False)

    return publish


async def _queue(connection: AbstractConnection, service: str) -> AbstractQueue:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    return await channel.declare_queue(
        queue_name(service), durable=True, arguments={"x-expires": QUEUE_EXPIRES_MS}
    )


async def _consume(connection: AbstractConnection, service: str, tally: Tally) -> None:
    # A callback, not queue.iterator(): the iterator's extra queue hop made it about 30% slower
    # in this benchmark, and the baseline should be the fast way to use aio-pika.
    queue = await _queue(connection, service)

    async def on_message(message: AbstractIncomingMessage) -> None:
        order = Order.model_validate_json(message.body)
        await message.ack()
        tally.add(order)

    await queue.consume(on_message)


async def publish_sequential(url: str, service: str, messages: int) -> Sample:
    async with await aio_pika.connect(url) as connection:
        return await timed_sequential(await _publisher(connection), messages)


async def publish_pipelined(url: str, service: str, messages: int) -> Sample:
    async with await aio_pika.connect(url) as connection:
        return await timed_pipelined(await _publisher(connection), messages)


async def consume(url: str, service: str, messages: int) -> Sample:
    tally = Tally(messages)
    async with await aio_pika.connect(url) as connection:
        await _consume(connection, service, tally)
        await tally.wait()
    return tally.sample()


async def latency(url: str, service: str, messages: int, rate: float, warmup: int) -> Sample:
    tally = LatencyTally(messages)
    async with await aio_pika.connect(url) as connection:
        publish = await _publisher(connection)
        await _consume(connection, service, tally)
        return await measure_latency(publish, tally, messages, rate, warmup)


CLIENT = Client("aio-pika", publish_sequential, publish_pipelined, consume, latency)
