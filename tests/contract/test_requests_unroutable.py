"""Requests are published mandatory: to a service that never started (no request queue bound),
``request()`` and ``publish()`` fail at once with ``Unroutable``; to one that started once and
stopped, they wait in its durable request queue. The same on both brokers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Publisher,
    RequestTimeout,
    Route,
    Unroutable,
    service_publisher,
    service_request_consumer,
)
from tests.helpers import queue_depth


class Quote(BaseModel):
    item: str
    count: int


class Invoice(BaseModel):
    number: int


class Price(BaseModel):
    item: str
    total: int


async def price(request: Quote) -> Price:
    return Price(item=request.item, total=request.count * 3)


NO_BILLING = (
    r"no service 'billing' consumes requests 'Quote': nothing is bound to exchange "
    r"'billing.direct.exchange.request' for that key; start the service \(it declares its "
    r"request queue\) or check the routing key"
)


async def test_requests_to_a_service_that_never_started_are_unroutable(
    amqp_events_broker_url: str,
) -> None:
    awaited = Publisher(Route(Quote, "Quote"))
    plain = Publisher(Route(Quote, "Quote"))
    async with Connection("shop", amqp_events_broker_url) as shop:
        await shop.start(
            service_publisher("billing", awaited, awaitable=True),
            service_publisher("billing", plain),
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(Unroutable, match=NO_BILLING):
            await awaited.request(Quote(item="tea", count=1), Price, timeout=30)
        with pytest.raises(Unroutable, match=NO_BILLING):
            await plain.publish(Quote(item="tea", count=1))
        assert loop.time() - began < 5  # at once, not at the request's timeout


async def test_a_request_key_the_service_does_not_consume_is_unroutable(
    amqp_events_broker_url: str,
) -> None:
    to_billing = Publisher(Route(Invoice, "Invoice"))
    async with (
        Connection("billing", amqp_events_broker_url) as billing,
        Connection("shop", amqp_events_broker_url) as shop,
    ):
        await billing.start(service_request_consumer("Quote", price))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        with pytest.raises(Unroutable, match="no service 'billing' consumes requests 'Invoice'"):
            await to_billing.request(Invoice(number=1), timeout=30)


async def test_requests_to_a_stopped_service_wait_in_its_queue(amqp_events_broker_url: str) -> None:
    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start(service_request_consumer("Quote", price))
    awaited = Publisher(Route(Quote, "Quote"))
    plain = Publisher(Route(Quote, "Quote"))
    async with Connection("shop", amqp_events_broker_url) as shop:
        await shop.start(
            service_publisher("billing", awaited, awaitable=True),
            service_publisher("billing", plain),
        )
        await plain.publish(Quote(item="tea", count=1))  # stored: billing's queue is bound
        with pytest.raises(RequestTimeout, match="still waiting for the response"):
            await awaited.request(Quote(item="tea", count=2), Price, timeout=0.3)
        assert (
            await queue_depth(amqp_events_broker_url, "billing.direct.exchange.request.queue") == 2
        )
        async with Connection("billing", amqp_events_broker_url) as billing_again:
            await billing_again.start(service_request_consumer("Quote", price))
            answer = await awaited.request(Quote(item="tea", count=3), Price, timeout=10)
            assert answer == Price(item="tea", total=9)
