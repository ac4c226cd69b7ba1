"""Wire compatibility with goamqp, checked on the real broker."""

from __future__ import annotations

import json
import uuid

import aio_pika
import aiormq
import pytest
from pamqp.common import FieldTable
from pydantic import BaseModel

from amqp_events import Connection, Publisher, Route, event_stream_consumer, event_stream_publisher
from amqp_events.testing import VhostView
from tests.helpers import Collector, goamqp_part

GOAMQP_QUEUE_ARGS: FieldTable = {"x-expires": 432000000}


class OrderCreated(BaseModel):
    id: str
    amount: int


async def declare_like_goamqp(url: str, service: str, key: str) -> None:
    """What goamqp's EventStreamConsumer declares, written out with aio-pika."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "events.topic.exchange", aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=False
        )
        queue = await channel.declare_queue(
            f"events.topic.exchange.queue.{service}",
            durable=True,
            auto_delete=False,
            exclusive=False,
            arguments=GOAMQP_QUEUE_ARGS,
        )
        await queue.bind(exchange, key)


async def test_consumer_starts_on_a_queue_goamqp_declared(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    await declare_like_goamqp(amqp_events_rabbitmq_vhost_url, "stat", "Order.Created")
    got: Collector[OrderCreated] = Collector()

    async def on_created(event: OrderCreated) -> None:
        got.add(event)

    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with (
        Connection("stat", amqp_events_rabbitmq_vhost_url) as stat,
        Connection("orders", amqp_events_rabbitmq_vhost_url) as orders,
    ):
        await stat.start(event_stream_consumer("Order.Created", on_created))  # no 406
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="1", amount=2))
        assert await got.wait(1) == [OrderCreated(id="1", amount=2)]
    # and goamqp can still declare it after us
    await declare_like_goamqp(amqp_events_rabbitmq_vhost_url, "stat", "Order.Created")


async def test_declared_queue_arguments_are_exactly_goamqps(
    amqp_events_rabbitmq_vhost_url: str, amqp_events_rabbitmq_admin: VhostView
) -> None:
    async def on_created(event: OrderCreated) -> None:
        pass

    async with Connection("stat", amqp_events_rabbitmq_vhost_url) as stat:
        await stat.start(event_stream_consumer("Order.#", on_created))
        queues = {q.name: q for q in amqp_events_rabbitmq_admin.queues()}
    queue = queues["events.topic.exchange.queue.stat"]
    assert queue.durable is True
    assert queue.auto_delete is False
    assert queue.arguments == GOAMQP_QUEUE_ARGS  # retries live in queues of their own:
    for delay_ms in (1000, 10000):  # the default policy's delays
        retry = queues[f"events.topic.exchange.queue.stat.retry.{delay_ms}"]
        assert retry.durable is True
        assert retry.arguments == {
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "events.topic.exchange.queue.stat",
        }
    dlq = queues["events.topic.exchange.queue.stat.dlq"]
    assert dlq.durable is True
    assert dlq.arguments == {}
    bindings = amqp_events_rabbitmq_admin.bindings("events.topic.exchange.queue.stat")
    assert any(
        b.exchange == "events.topic.exchange" and b.routing_key == "Order.#" for b in bindings
    ), bindings


async def test_redeclaring_with_other_arguments_would_fail(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    """The check above means something: RabbitMQ refuses different arguments."""
    await declare_like_goamqp(amqp_events_rabbitmq_vhost_url, "stat", "Order.Created")
    connection = await aio_pika.connect(amqp_events_rabbitmq_vhost_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(
                "events.topic.exchange.queue.stat", durable=True, arguments={"x-expires": 1000}
            )


async def test_published_message_properties(amqp_events_rabbitmq_vhost_url: str) -> None:
    connection = await aio_pika.connect(amqp_events_rabbitmq_vhost_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "events.topic.exchange", aio_pika.ExchangeType.TOPIC, durable=True
        )
        spy = await channel.declare_queue(f"spy-{uuid.uuid4()}", exclusive=True)
        await spy.bind(exchange, "#")
        publisher = Publisher(Route(OrderCreated, "Order.Created"))
        async with Connection("orders", amqp_events_rabbitmq_vhost_url) as orders:
            await orders.start(event_stream_publisher(publisher))
            await publisher.publish(OrderCreated(id="7", amount=3), headers={"trace": "abc"})
        message = await spy.get(timeout=5)
        assert message is not None
        await message.ack()
    assert message.routing_key == "Order.Created"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    headers = goamqp_part(message.headers, source="orders", type="Order.Created")
    assert headers == {"service": "orders", "trace": "abc"}
    assert message.message_id == message.headers["cloudEvents:id"]
    assert message.timestamp is not None
    assert json.loads(message.body) == {"id": "7", "amount": 3}
