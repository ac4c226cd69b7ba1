"""Service-to-service: requests, responses, awaitable requests and queue publishing, the same on
the in-memory broker and on RabbitMQ."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Headers,
    Publisher,
    PublishError,
    RemoteError,
    RequestTimeout,
    Route,
    queue_publisher,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
    stream_consumer,
)
from tests.helpers import Collector, drain, eventually, queue_depth, raw_publish


class Quote(BaseModel):
    item: str
    count: int


class Price(BaseModel):
    item: str
    total: int


class Ping(BaseModel):
    n: int


class Pong(BaseModel):
    n: int


async def price(request: Quote) -> Price:
    return Price(item=request.item, total=request.count * 3)


async def test_plain_request_response_both_ways(amqp_events_broker_url: str) -> None:
    """goamqp's shape: requests, responses to a response consumer; each service asks the other."""
    shop_got: Collector[tuple[Price, Headers]] = Collector()
    billing_got: Collector[Pong] = Collector()
    to_billing = Publisher(Route(Quote, "Quote"))
    to_shop = Publisher(Route(Ping, "Ping"))

    async def pong(request: Ping) -> Pong:
        return Pong(n=request.n + 1)

    async def on_price(response: Price, headers: Headers) -> None:
        shop_got.add((response, headers))

    async def on_pong(response: Pong) -> None:
        billing_got.add(response)

    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(
            service_request_consumer("Quote", price),
            service_publisher("shop", to_shop),
            service_response_consumer("shop", "Ping", on_pong),
        )
        await shop.start(
            service_request_consumer("Ping", pong),
            service_publisher("billing", to_billing),
            service_response_consumer("billing", "Quote", on_price),
        )
        await to_billing.publish(Quote(item="tea", count=2))
        await to_shop.publish(Ping(n=1))
        [(response, headers)] = await shop_got.wait(1)
        assert response == Price(item="tea", total=6)
        assert headers.service == "shop"  # goamqp routes the response by the caller's name
        assert await billing_got.wait(1) == [Pong(n=2)]


async def test_awaitable_requests_are_matched_under_concurrency(
    amqp_events_broker_url: str,
) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", price))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        responses = await asyncio.gather(
            *(
                to_billing.request(Quote(item=f"i{n}", count=n), Price, timeout=30)
                for n in range(1000)
            )
        )
    assert responses == [Price(item=f"i{n}", total=3 * n) for n in range(1000)]


async def test_awaitable_request_without_type_returns_json(amqp_events_broker_url: str) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", price))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        assert await to_billing.request(Quote(item="x", count=1)) == {"item": "x", "total": 3}


async def test_responder_error_reaches_the_caller(amqp_events_broker_url: str) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    calls: Collector[Quote] = Collector()

    async def refuse(request: Quote) -> Price:
        calls.add(request)
        raise ValueError(f"no price for {request.item}")

    async with (
        Connection("shop", amqp_events_broker_url) as shop,
        Connection("billing", amqp_events_broker_url) as billing,
    ):
        await billing.start(service_request_consumer("Quote", refuse))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        with pytest.raises(RemoteError, match="no price for tea") as info:
            await to_billing.request(Quote(item="tea", count=1), Price, timeout=10)
        assert info.value.error_type == "ValueError"
        assert info.value.service == "billing"
        assert len(calls.items) == 1  # answered at once, not retried while the caller waits
    assert await queue_depth(amqp_events_broker_url, "billing.direct.exchange.request.queue") == 0


async def test_request_timeout(amqp_events_broker_url: str) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start(service_request_consumer("Quote", price))
    # billing's request queue stays, with nobody consuming it
    async with Connection("shop", amqp_events_broker_url) as shop:
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        with pytest.raises(RequestTimeout, match="no response from 'billing' to 'Quote'"):
            await to_billing.request(Quote(item="tea", count=1), Price, timeout=0.2)


async def test_response_waits_for_a_caller_that_stopped(amqp_events_broker_url: str) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    answered: Collector[Price] = Collector()
    served = asyncio.Event()
    published = asyncio.Event()

    async def slow_price(request: Quote) -> Price:
        await published.wait()  # the caller's publish was confirmed ...
        await shop.close()  # ... then it goes away while its request is being handled
        served.set()
        return await price(request)

    async def on_price(response: Price) -> None:
        answered.add(response)

    shop = Connection("shop", amqp_events_broker_url)
    async with Connection("billing", amqp_events_broker_url) as billing:
        await shop.start(
            service_publisher("billing", to_billing),
            service_response_consumer("billing", "Quote", on_price),
        )
        await billing.start(service_request_consumer("Quote", slow_price))
        await to_billing.publish(Quote(item="tea", count=2))
        published.set()
        await asyncio.wait_for(served.wait(), 10)
    # billing's close waited for the handler, whose response the broker confirmed
    assert (
        await queue_depth(amqp_events_broker_url, "billing.headers.exchange.response.queue.shop")
        == 1
    )
    # the caller comes back and gets it
    async with Connection("shop", amqp_events_broker_url) as shop_again:
        await shop_again.start(service_response_consumer("billing", "Quote", on_price))
        assert await answered.wait(1) == [Price(item="tea", total=6)]


async def test_request_without_service_header_is_dead_lettered_unhandled(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[Quote] = Collector()

    async def count(request: Quote) -> Price:
        calls.add(request)
        return await price(request)

    queue = "billing.direct.exchange.request.queue"
    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start(service_request_consumer("Quote", count))
        await raw_publish(
            amqp_events_broker_url,
            "billing.direct.exchange.request",
            "Quote",
            b'{"item":"a","count":1}',
            {},
        )

        async def dead_lettered() -> bool:
            return await queue_depth(amqp_events_broker_url, queue + ".dlq") == 1

        await eventually(dead_lettered)
    # No response could be sent, so the handler did not run (its effects would be orphaned).
    assert calls.items == []
    [(_, headers)] = await drain(amqp_events_broker_url, queue + ".dlq")
    assert headers["amqp-events-dead-reason"] == "unanswerable"
    assert await queue_depth(amqp_events_broker_url, queue) == 0


async def test_queue_publisher_with_cc_reaches_every_queue(amqp_events_broker_url: str) -> None:
    got: dict[str, Collector[Quote]] = {name: Collector() for name in ("a", "b", "c")}
    publisher = Publisher(Route(Quote, "Quote.Sent"))
    connections = [Connection(name, amqp_events_broker_url) for name in got]
    async with Connection("sender", amqp_events_broker_url) as sender:
        for conn, collector in zip(connections, got.values(), strict=True):

            async def on_quote(event: Quote, collector: Collector[Quote] = collector) -> None:
                collector.add(event)

            # each service's queue is bound to something else: only CC brings the message
            await conn.start(stream_consumer("unused", "Quote.Sent", on_quote))
        queue = "unused.topic.exchange.queue."
        await sender.start(queue_publisher(publisher, queue + "a", cc=(queue + "b",)))
        await publisher.publish(Quote(item="x", count=1), headers={"CC": [queue + "c"]})
        for collector in got.values():
            assert await collector.wait(1) == [Quote(item="x", count=1)]
        for conn in connections:
            await conn.close()


async def test_queue_publisher_to_a_missing_queue_raises(amqp_events_broker_url: str) -> None:
    publisher = Publisher(Route(Quote, "Quote.Sent"))
    async with Connection("sender", amqp_events_broker_url) as sender:
        await sender.start(queue_publisher(publisher, "no-such-queue"))
        with pytest.raises(PublishError, match="unroutable"):
            await publisher.publish(Quote(item="x", count=1))
