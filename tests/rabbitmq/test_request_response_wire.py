"""Request/response names, declarations and messages exactly as goamqp's, on the real broker."""

from __future__ import annotations

import json

import aio_pika
import aiormq
import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Publisher,
    Route,
    queue_publisher,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
)
from amqp_events.testing import BindingInfo, VhostView
from tests.helpers import Collector, goamqp_part


class Quote(BaseModel):
    item: str
    count: int


class Price(BaseModel):
    item: str
    total: int


async def price(request: Quote) -> Price:
    return Price(item=request.item, total=request.count * 3)


async def on_price(response: Price) -> None:
    pass


async def assert_exchange_type(url: str, name: str, kind: aio_pika.ExchangeType) -> None:
    """Redeclaring with the same type succeeds; RabbitMQ refuses any other (406)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(name, kind, durable=True, auto_delete=False)


async def test_names_bindings_and_arguments(
    amqp_events_rabbitmq_vhost_url: str, amqp_events_rabbitmq_admin: VhostView
) -> None:
    async with (
        Connection("shop", amqp_events_rabbitmq_vhost_url) as shop,
        Connection("billing", amqp_events_rabbitmq_vhost_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", price))
        await shop.start(
            service_publisher("billing", Publisher(Route(Quote, "Quote"))),
            service_response_consumer("billing", "Quote", on_price),
        )
        queues = {q.name: q for q in amqp_events_rabbitmq_admin.queues()}
        bindings = amqp_events_rabbitmq_admin.bindings()
    expected_queues = {
        "billing.direct.exchange.request.queue",
        "billing.headers.exchange.response.queue.shop",
    }
    assert expected_queues <= set(queues)
    for name in expected_queues:
        assert queues[name].durable is True
        assert queues[name].auto_delete is False
        assert queues[name].arguments == {"x-expires": 432000000}

    assert (
        BindingInfo(
            queue="billing.direct.exchange.request.queue",
            exchange="billing.direct.exchange.request",
            routing_key="Quote",
            arguments={},
        )
        in bindings
    ), bindings
    assert (
        BindingInfo(
            queue="billing.headers.exchange.response.queue.shop",
            exchange="billing.headers.exchange.response",
            routing_key="Quote",
            arguments={"service": "shop"},
        )
        in bindings
    ), bindings
    await assert_exchange_type(
        amqp_events_rabbitmq_vhost_url,
        "billing.direct.exchange.request",
        aio_pika.ExchangeType.DIRECT,
    )
    await assert_exchange_type(
        amqp_events_rabbitmq_vhost_url,
        "billing.headers.exchange.response",
        aio_pika.ExchangeType.HEADERS,
    )
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await assert_exchange_type(
            amqp_events_rabbitmq_vhost_url,
            "billing.headers.exchange.response",
            aio_pika.ExchangeType.TOPIC,
        )


async def test_answers_a_goamqp_caller(amqp_events_rabbitmq_vhost_url: str) -> None:
    """A goamqp caller sends no correlation id; it gets the response in its response queue."""
    async with Connection("billing", amqp_events_rabbitmq_vhost_url) as billing:
        await billing.start(service_request_consumer("Quote", price))
        connection = await aio_pika.connect(amqp_events_rabbitmq_vhost_url)
        async with connection:
            channel = await connection.channel()
            responses = await channel.declare_exchange(
                "billing.headers.exchange.response", aio_pika.ExchangeType.HEADERS, durable=True
            )
            queue = await channel.declare_queue(
                "billing.headers.exchange.response.queue.go-caller",
                durable=True,
                arguments={"x-expires": 432000000},
            )
            await queue.bind(responses, "Quote", arguments={"service": "go-caller"})
            requests = await channel.get_exchange("billing.direct.exchange.request")
            await requests.publish(
                aio_pika.Message(
                    b'{"item":"tea","count":2}',
                    headers={"service": "go-caller"},
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                "Quote",
            )
            async with queue.iterator(timeout=10) as messages:
                async for message in messages:
                    await message.ack()
                    break
    assert json.loads(message.body) == {"item": "tea", "total": 6}
    assert message.routing_key == "Quote"
    assert goamqp_part(message.headers, source="billing", type="Quote") == {"service": "go-caller"}
    assert message.correlation_id is None


async def test_reads_a_goamqp_responder(amqp_events_rabbitmq_vhost_url: str) -> None:
    """A goamqp responder copies no correlation id: responses reach the response handler."""
    got: Collector[Price] = Collector()

    async def on_response(response: Price) -> None:
        got.add(response)

    publisher = Publisher(Route(Quote, "Quote"))
    async with Connection("shop", amqp_events_rabbitmq_vhost_url) as shop:
        await shop.start(
            service_publisher("go-billing", publisher),
            service_response_consumer("go-billing", "Quote", on_response),
        )
        connection = await aio_pika.connect(amqp_events_rabbitmq_vhost_url)
        async with connection:
            channel = await connection.channel()
            request_queue = await channel.declare_queue(
                "go-billing.direct.exchange.request.queue",
                durable=True,
                arguments={"x-expires": 432000000},
            )
            await request_queue.bind("go-billing.direct.exchange.request", "Quote")
            await publisher.publish(Quote(item="tea", count=2))
            request = await request_queue.get(timeout=5)
            assert request is not None
            await request.ack()
            assert goamqp_part(request.headers, source="shop", type="Quote") == {"service": "shop"}
            responses = await channel.get_exchange("go-billing.headers.exchange.response")
            await responses.publish(
                aio_pika.Message(b'{"item":"tea","total":6}', headers={"service": "shop"}),
                "Quote",
            )
            assert await got.wait(1) == [Price(item="tea", total=6)]


async def test_queue_publisher_message_is_goamqps(amqp_events_rabbitmq_vhost_url: str) -> None:
    publisher = Publisher(Route(Quote, "Quote.Sent"))
    connection = await aio_pika.connect(amqp_events_rabbitmq_vhost_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("inbox", durable=True)
        async with Connection("sender", amqp_events_rabbitmq_vhost_url) as sender:
            await sender.start(queue_publisher(publisher, "inbox"))
            await publisher.publish(Quote(item="x", count=1))
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
    assert message.exchange == ""
    assert message.routing_key == "Quote.Sent"  # the event's key, as goamqp sends it
    headers = goamqp_part(message.headers, source="sender", type="Quote.Sent")
    assert headers == {"service": "sender", "CC": ["inbox"]}
