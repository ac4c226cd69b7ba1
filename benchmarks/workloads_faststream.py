"""The workloads on FastStream's RabbitBroker (optional: importing this needs faststream[rabbit]).

Set up to match the others (checked against FastStream 0.7's source, ``faststream.rabbit``):

- its channels have publisher confirms on by default (``Channel.publisher_confirms=True``), and
  ``publish`` awaits the confirm;
- messages are transient by default (``persist=False``): ``persist=True`` here;
- publishes are mandatory by default: ``mandatory=False`` here, as amqp-events and aio-pika;
- the default ack policy acks after the handler returned (``AckPolicy.REJECT_ON_ERROR``);
- ``logger=None``: its default access log writes two lines per message, which the other clients
  do not do either.
"""

from __future__ import annotations

from faststream.rabbit import (
    Channel,
    ExchangeType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.publisher import RabbitPublisher

from .client import Client
from .common import (
    EXCHANGE,
    PREFETCH,
    QUEUE_EXPIRES_MS,
    ROUTING_KEY,
    LatencyTally,
    Order,
    Sample,
    Tally,
    measure_latency,
    queue_name,
    timed_pipelined,
    timed_sequential,
)

__all__ = ["CLIENT"]

_EXCHANGE = RabbitExchange(EXCHANGE, type=ExchangeType.TOPIC, durable=True)


def _publisher(broker: RabbitBroker) -> RabbitPublisher:
    return broker.publisher(
        exchange=_EXCHANGE, routing_key=ROUTING_KEY, persist=True, mandatory=False
    )


def _subscribe(broker: RabbitBroker, service: str, tally: Tally) -> None:
    queue = RabbitQueue(
        queue_name(service),
        durable=True,
        arguments={"x-expires": QUEUE_EXPIRES_MS},
        routing_key=ROUTING_KEY,
    )

    @broker.subscriber(queue, _EXCHANGE, channel=Channel(prefetch_count=PREFETCH))
    async def on_order(order: Order) -> None:
        tally.add(order)


async def publish_sequential(url: str, service: str, messages: int) -> Sample:
    broker = RabbitBroker(url, logger=None)
    publisher = _publisher(broker)
    async with broker:
        await broker.start()
        return await timed_sequential(publisher.publish, messages)


async def publish_pipelined(url: str, service: str, messages: int) -> Sample:
    broker = RabbitBroker(url, logger=None)
    publisher = _publisher(broker)
    async with broker:
        await broker.start()
        return await timed_pipelined(publisher.publish, messages)


async def consume(url: str, service: str, messages: int) -> Sample:
    tally = Tally(messages)
    broker = RabbitBroker(url, logger=None)
    _subscribe(broker, service, tally)
    async with broker:
        await broker.start()
        await tally.wait()
    return tally.sample()


async def latency(url: str, service: str, messages: int, rate: float, warmup: int) -> Sample:
    tally = LatencyTally(messages)
    broker = RabbitBroker(url, logger=None)
    publisher = _publisher(broker)
    _subscribe(broker, service, tally)
    async with broker:
        await broker.start()
        return await measure_latency(publisher.publish, tally, messages, rate, warmup)


CLIENT = Client("faststream", publish_sequential, publish_pipelined, consume, latency)
