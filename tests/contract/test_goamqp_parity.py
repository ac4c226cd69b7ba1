"""goamqp's setup surface, ported: streams by name, queue suffixes, responses sent without a
request handler returning them, the message logger. Both brokers."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from pydantic import BaseModel

from amqp_events import (
    ConfigurationError,
    Connection,
    EventRouter,
    Headers,
    LoggedMessage,
    Publisher,
    Reject,
    RetryPolicy,
    Route,
    Setup,
    event_stream_consumer,
    event_stream_publisher,
    request_response_handler,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
    stream_consumer,
    stream_publisher,
    transient_stream_consumer,
    with_message_logger,
)
from tests.helpers import Collector, queue_depth, raw_publish


class OrderCreated(BaseModel):
    id: str


class Quote(BaseModel):
    item: str


class Price(BaseModel):
    item: str
    total: int


def collecting() -> tuple[Collector[OrderCreated], Callable[[OrderCreated], Awaitable[None]]]:
    """A collector and a handler of ``OrderCreated`` that adds to it."""
    got: Collector[OrderCreated] = Collector()

    async def on_created(event: OrderCreated) -> None:
        got.add(event)

    return got, on_created


@contextlib.asynccontextmanager
async def stat_and_orders(
    url: str, stat: Sequence[Setup], orders: Sequence[Setup]
) -> AsyncIterator[Connection]:
    """Services "stat" and "orders" started with these setups, in that order; yields "stat"."""
    async with (
        Connection("stat", url) as stat_conn,
        Connection("orders", url) as orders_conn,
    ):
        await stat_conn.start(*stat)
        await orders_conn.start(*orders)
        yield stat_conn


async def test_a_stream_is_named_as_goamqp_names_it(amqp_events_broker_url: str) -> None:
    """StreamPublisher("orders", p) and StreamConsumer("orders", ...) ported line by line:
    the exchange is orders.topic.exchange, the queue orders.topic.exchange.queue.<service>."""
    got, on_created = collecting()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))

    async with stat_and_orders(
        amqp_events_broker_url,
        [stream_consumer("orders", "Order.Created", on_created)],
        [stream_publisher("orders", publisher)],
    ):
        await publisher.publish(OrderCreated(id="1"))
        # what a goamqp StreamPublisher("orders", ...) sends
        await raw_publish(
            amqp_events_broker_url,
            "orders.topic.exchange",
            "Order.Created",
            b'{"id": "2"}',
            {"service": "go"},
        )
        assert await got.wait(2) == [OrderCreated(id="1"), OrderCreated(id="2")]
    assert await queue_depth(amqp_events_broker_url, "orders.topic.exchange.queue.stat") == 0


async def test_event_stream_setups_are_the_events_stream(amqp_events_broker_url: str) -> None:
    got, on_created = collecting()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))

    async with stat_and_orders(
        amqp_events_broker_url,
        [stream_consumer("events", "Order.Created", on_created)],
        [event_stream_publisher(publisher)],
    ):
        await publisher.publish(OrderCreated(id="1"))
        assert await got.wait(1) == [OrderCreated(id="1")]
    assert await queue_depth(amqp_events_broker_url, "events.topic.exchange.queue.stat") == 0


async def test_queue_suffix_gives_a_second_queue_of_the_same_service(
    amqp_events_broker_url: str,
) -> None:
    """AddQueueNameSuffix: two handlers of one key in one service, each on its own queue."""
    main, on_created = collecting()
    audit, on_audit = collecting()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))

    async with stat_and_orders(
        amqp_events_broker_url,
        [
            event_stream_consumer("Order.Created", on_created),
            event_stream_consumer("Order.Created", on_audit, queue_suffix="audit"),
        ],
        [event_stream_publisher(publisher)],
    ):
        await publisher.publish(OrderCreated(id="1"))
        assert await main.wait(1) == [OrderCreated(id="1")]
        assert await audit.wait(1) == [OrderCreated(id="1")]
    assert await queue_depth(amqp_events_broker_url, "events.topic.exchange.queue.stat-audit") == 0


async def test_transient_stream_consumer_and_the_message_logger(
    amqp_events_broker_url: str,
) -> None:
    logged: list[LoggedMessage] = []
    got, on_created = collecting()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))

    async with stat_and_orders(
        amqp_events_broker_url,
        [
            transient_stream_consumer("orders", "Order.Created", on_created, queue_suffix="live"),
            with_message_logger(logged.append),
        ],
        [stream_publisher("orders", publisher), with_message_logger(logged.append)],
    ) as stat:
        await publisher.publish(OrderCreated(id="1"))
        await got.wait(1)
        await stat.close()
    out, received = sorted(logged, key=lambda m: m.direction != "out")
    assert (out.direction, out.service, out.where) == ("out", "orders", "orders.topic.exchange")
    assert (out.routing_key, out.event) == ("Order.Created", OrderCreated(id="1"))
    assert (received.direction, received.service) == ("in", "stat")
    assert re.fullmatch(
        r"orders\.topic\.exchange\.queue\.stat-[0-9a-f-]{36}-live", received.where
    ), received.where
    assert received.event == OrderCreated(id="1")


async def test_the_message_logger_sees_dead_letters_and_its_errors_are_contained(
    amqp_events_broker_url: str,
) -> None:
    logged: Collector[LoggedMessage] = Collector()

    def log(message: LoggedMessage) -> None:
        logged.add(message)
        raise RuntimeError("a broken logger must not break delivery")

    publisher = Publisher(Route(OrderCreated, "Order.Created"))

    async def refuse(event: OrderCreated) -> None:
        raise Reject("no")

    async with Connection("stat", amqp_events_broker_url) as stat:
        await stat.start(
            event_stream_consumer("Order.Created", refuse),
            event_stream_publisher(publisher),
            with_message_logger(log),
        )
        await publisher.publish(OrderCreated(id="1"))
        await logged.wait(2)
    dead = [m for m in logged.items if m.direction == "dead-lettered"]
    assert [(m.where, m.reason) for m in dead] == [("events.topic.exchange.queue.stat", "rejected")]
    assert await queue_depth(amqp_events_broker_url, "events.topic.exchange.queue.stat.dlq") == 1


async def test_stream_decorators_on_connection_and_router(amqp_events_broker_url: str) -> None:
    got: Collector[str] = Collector()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    stat = Connection("stat", amqp_events_broker_url)
    router = EventRouter()

    @stat.stream_consumer("orders", "Order.Created")
    async def on_created(event: OrderCreated) -> None:
        got.add("connection")

    @router.stream_consumer("orders", "Order.Created", queue_suffix="router")
    async def on_created_too(event: OrderCreated) -> None:
        got.add("router")

    stat.include(router)
    async with stat, Connection("orders", amqp_events_broker_url) as orders:
        await stat.start()
        await orders.start(stream_publisher("orders", publisher))
        await publisher.publish(OrderCreated(id="1"))
        assert sorted(await got.wait(2)) == ["connection", "router"]


async def test_publish_service_response_answers_later(amqp_events_broker_url: str) -> None:
    """goamqp's PublishServiceResponse: a request handler that answers on its own."""
    prices: Collector[tuple[Price, str | None]] = Collector()
    to_billing = Publisher(Route(Quote, "Quote"))
    billing = Connection("billing", amqp_events_broker_url)

    async def take(request: Quote, headers: Headers) -> None:
        assert headers.service == "shop"
        await billing.publish_service_response(
            headers.service, "Quote", Price(item=request.item, total=6)
        )

    async def on_price(response: Price, headers: Headers) -> None:
        prices.add((response, headers.service))

    async with billing, Connection("shop", amqp_events_broker_url) as shop:
        await billing.start(service_request_consumer("Quote", take))
        await shop.start(
            service_publisher("billing", to_billing),
            service_response_consumer("billing", "Quote", on_price),
        )
        await to_billing.publish(Quote(item="tea"))
        assert await prices.wait(1) == [(Price(item="tea", total=6), "shop")]


async def test_publish_service_response_needs_a_request_consumer(
    amqp_events_broker_url: str,
) -> None:
    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start()
        with pytest.raises(ConfigurationError, match="service_request_consumer"):
            await billing.publish_service_response("shop", "Quote", Price(item="x", total=1))


async def test_request_response_handler_is_service_request_consumer(
    amqp_events_broker_url: str,
) -> None:
    to_billing = Publisher(Route(Quote, "Quote"))

    async def price(request: Quote) -> Price:
        return Price(item=request.item, total=3)

    assert request_response_handler is service_request_consumer
    async with (
        Connection("billing", amqp_events_broker_url) as billing,
        Connection("shop", amqp_events_broker_url) as shop,
    ):
        await billing.start(request_response_handler("Quote", price, retry=RetryPolicy(attempts=1)))
        await shop.start(service_publisher("billing", to_billing, awaitable=True))
        assert await to_billing.request(Quote(item="tea"), Price, timeout=10) == Price(
            item="tea", total=3
        )
