"""Event streams behave the same on the in-memory broker and on RabbitMQ."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from amqp_events import (
    ConfigurationError,
    Connection,
    EventRouter,
    Headers,
    Publisher,
    RetryPolicy,
    Route,
    close_listener,
    event_stream_consumer,
    event_stream_publisher,
    with_prefetch_limit,
    with_retry_policy,
    with_type_mapping,
)
from amqp_events.testing import capture
from tests.helpers import Collector, queue_depth, raw_publish


class OrderCreated(BaseModel):
    id: str
    amount: int


class OrderUpdated(BaseModel):
    id: str
    amount: int


def order_publisher() -> Publisher:
    return Publisher(Route(OrderCreated, "Order.Created"), Route(OrderUpdated, "Order.Updated"))


async def test_two_services_two_types(amqp_events_broker_url: str) -> None:
    stat_got: Collector[tuple[OrderCreated, Headers]] = Collector()
    shipping_got: Collector[tuple[str, BaseModel]] = Collector()
    stat = Connection("stat", amqp_events_broker_url)
    shipping = Connection("shipping", amqp_events_broker_url)
    orders = Connection("orders", amqp_events_broker_url)

    @stat.event_stream_consumer("Order.Created")
    async def on_created(event: OrderCreated, headers: Headers) -> None:
        stat_got.add((event, headers))

    @shipping.event_stream_consumer("Order.#")
    async def on_any(event: OrderCreated | OrderUpdated) -> None:
        shipping_got.add((type(event).__name__, event))

    publisher = order_publisher()
    async with stat, shipping, orders:
        await stat.start()
        await shipping.start(with_type_mapping(*publisher.routes))
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="1", amount=5), headers={"trace": "t-1"})
        await publisher.publish(OrderUpdated(id="1", amount=7))

        [(created, headers)] = await stat_got.wait(1)
        assert created == OrderCreated(id="1", amount=5)
        assert headers.service == "orders"
        assert headers["trace"] == "t-1"
        assert sorted(await shipping_got.wait(2), key=lambda x: x[0]) == [
            ("OrderCreated", OrderCreated(id="1", amount=5)),
            ("OrderUpdated", OrderUpdated(id="1", amount=7)),
        ]
        await stat_got.settle()
        assert len(stat_got.items) == 1  # stat is not bound to Order.Updated


async def test_union_resolves_only_through_its_own_connection(amqp_events_broker_url: str) -> None:
    """Routes made elsewhere in the process (the orders service's publisher here) do not count:
    a consumer-only connection maps its union with with_type_mapping."""
    got: Collector[BaseModel] = Collector()

    async def on_order(event: OrderCreated | OrderUpdated) -> None:
        got.add(event)

    publisher = order_publisher()  # its routes exist in this process, on another connection
    async with Connection("stat", amqp_events_broker_url) as stat:
        with pytest.raises(ConfigurationError) as refused:
            await stat.start(event_stream_consumer("Order.#", on_order))
    message = str(refused.value)
    assert "OrderCreated, OrderUpdated have no route on this connection" in message
    assert "with_type_mapping(Route(" in message
    assert "a Route made elsewhere in the process does not count" in message

    async with (
        Connection("stat", amqp_events_broker_url) as stat,
        Connection("orders", amqp_events_broker_url) as orders,
    ):
        await stat.start(
            with_type_mapping(*publisher.routes), event_stream_consumer("Order.#", on_order)
        )
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderUpdated(id="1", amount=2))
        await publisher.publish(OrderCreated(id="2", amount=3))
        assert await got.wait(2) == [OrderUpdated(id="1", amount=2), OrderCreated(id="2", amount=3)]


async def test_union_on_an_exact_key_needs_a_mapping_for_that_key(
    amqp_events_broker_url: str,
) -> None:
    async def on_order(event: OrderCreated | OrderUpdated) -> None:
        pass

    order_publisher()
    Route(OrderCreated, "Order.Created")  # elsewhere in the process: no effect
    async with Connection("stat", amqp_events_broker_url) as stat:
        with pytest.raises(ConfigurationError, match=r"no type of the union is mapped to "):
            await stat.start(event_stream_consumer("Order.Created", on_order))


async def test_key_with_no_type_of_the_union_is_dead_lettered_as_no_type(
    amqp_events_broker_url: str,
) -> None:
    got: Collector[BaseModel] = Collector()
    async with Connection("stat", amqp_events_broker_url) as stat:

        @stat.event_stream_consumer("Order.#")
        async def on_order(event: OrderCreated | OrderUpdated) -> None:
            got.add(event)

        await stat.start(with_type_mapping(*order_publisher().routes))
        async with capture(stat) as outcome:
            body = b'{"id": "3", "amount": 1}'
            await raw_publish(
                amqp_events_broker_url, "events.topic.exchange", "Order.Deleted", body, {}
            )
            await raw_publish(
                amqp_events_broker_url, "events.topic.exchange", "Order.Created", body, {}
            )
    assert got.items == [OrderCreated(id="3", amount=1)]
    [dead] = outcome.dead_lettered
    assert (dead.routing_key, dead.reason, dead.exception_type) == (
        "Order.Deleted",
        "no-type",
        None,
    )
    assert "'Order.Deleted'" in dead.cause
    assert "OrderCreated | OrderUpdated" in dead.cause
    assert dead.event == {"id": "3", "amount": 1}  # no type to decode with: the JSON


async def test_shipping_like_goamqp_one_handler_two_keys(amqp_events_broker_url: str) -> None:
    got: Collector[BaseModel] = Collector()

    async def handle_order_event(event: OrderCreated | OrderUpdated, headers: Headers) -> None:
        got.add(event)

    publisher = order_publisher()
    async with (
        Connection("shipping", amqp_events_broker_url) as shipping,
        Connection("orders", amqp_events_broker_url) as orders,
    ):
        await shipping.start(
            event_stream_consumer("Order.Created", handle_order_event, OrderCreated),
            event_stream_consumer("Order.Updated", handle_order_event, OrderUpdated),
        )
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="1", amount=1))
        await publisher.publish(OrderUpdated(id="1", amount=2))
        assert {type(e) for e in await got.wait(2)} == {OrderCreated, OrderUpdated}


class GoOrderCreated(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="Id")
    amount: int = Field(alias="Amount")


async def test_goamqp_style_message_decodes_through_aliases(amqp_events_broker_url: str) -> None:
    got: Collector[tuple[GoOrderCreated, Headers]] = Collector()
    async with Connection("py-stat", amqp_events_broker_url) as conn:

        @conn.event_stream_consumer("Order.Created")
        async def on_created(event: GoOrderCreated, headers: Headers) -> None:
            got.add((event, headers))

        await conn.start()
        # Exactly what goamqp sends: Go field names, header service, JSON content type.
        await raw_publish(
            amqp_events_broker_url,
            "events.topic.exchange",
            "Order.Created",
            b'{"Id":"42","Amount":5,"Extra":"ignored"}',
            {"service": "go-orders"},
        )
        [(event, headers)] = await got.wait(1)
        assert event == GoOrderCreated(id="42", amount=5)
        assert headers.service == "go-orders"


async def test_undecodable_body_is_dropped_not_redelivered(amqp_events_broker_url: str) -> None:
    got: Collector[OrderCreated] = Collector()
    queue = "events.topic.exchange.queue.picky"
    async with Connection("picky", amqp_events_broker_url) as conn:

        @conn.event_stream_consumer("Order.Created")
        async def on_created(event: OrderCreated) -> None:
            got.add(event)

        await conn.start()
        exchange = "events.topic.exchange"
        await raw_publish(amqp_events_broker_url, exchange, "Order.Created", b"{not json", {})
        await raw_publish(
            amqp_events_broker_url, exchange, "Order.Created", b'{"id": "1"}', {}
        )  # no amount
        await raw_publish(
            amqp_events_broker_url, exchange, "Order.Created", b'{"id":"2","amount":1}', {}
        )
        assert [e.id for e in await got.wait(1)] == ["2"]
    # closed: anything unacked or requeued would be back in the queue now
    assert await queue_depth(amqp_events_broker_url, queue) == 0


async def test_message_with_no_handler_is_dropped(amqp_events_broker_url: str) -> None:
    got: Collector[dict[str, Any]] = Collector()
    async with Connection("narrow", amqp_events_broker_url) as conn:

        @conn.event_stream_consumer("Order.Created")
        async def on_created(event: dict[str, Any]) -> None:
            got.add(event)

        await conn.start()
        queue = "events.topic.exchange.queue.narrow"
        # Delivered straight to the queue with a key no handler matches.
        await raw_publish(amqp_events_broker_url, "", queue, b'{"id": "x"}', {})
        await raw_publish(
            amqp_events_broker_url, "events.topic.exchange", "Order.Created", b'{"id": "y"}', {}
        )
        assert await got.wait(1) == [{"id": "y"}]
    assert await queue_depth(amqp_events_broker_url, queue) == 0


async def test_failing_handler_is_retried_a_bounded_number_of_times(
    amqp_events_broker_url: str,
) -> None:
    calls: Collector[str] = Collector()
    publisher = order_publisher()
    async with (
        Connection("flaky", amqp_events_broker_url) as conn,
        Connection("orders", amqp_events_broker_url) as orders,
    ):
        fast = with_retry_policy(RetryPolicy(attempts=3, delays=(0.05,)))

        @conn.event_stream_consumer("Order.Created")
        async def always_fails(event: OrderCreated) -> None:
            calls.add(event.id)
            raise RuntimeError("boom")

        @conn.event_stream_consumer("Order.Updated")
        async def fails_once(event: OrderUpdated) -> None:
            calls.add("u" + event.id)
            if calls.items.count("u" + event.id) == 1:
                raise RuntimeError("first time only")

        await conn.start(fast)
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="1", amount=1))
        await publisher.publish(OrderUpdated(id="2", amount=1))
        await calls.wait(5)
        await calls.settle(0.5)
        assert calls.items.count("1") == 3
        assert calls.items.count("u2") == 2
    assert await queue_depth(amqp_events_broker_url, "events.topic.exchange.queue.flaky") == 0


async def test_router_and_transient_consumer(amqp_events_broker_url: str) -> None:
    durable: Collector[OrderCreated] = Collector()
    transient: Collector[OrderCreated] = Collector()
    router = EventRouter()

    @router.event_stream_consumer("Order.Created")
    async def on_durable(event: OrderCreated) -> None:
        durable.add(event)

    @router.transient_event_stream_consumer("Order.*")
    async def on_transient(event: OrderCreated) -> None:
        transient.add(event)

    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with (
        Connection("viewer", amqp_events_broker_url) as conn,
        Connection("orders", amqp_events_broker_url) as orders,
    ):
        conn.include(router)
        await conn.start(with_prefetch_limit(5))
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="1", amount=1))
        assert await durable.wait(1) == [OrderCreated(id="1", amount=1)]
        assert await transient.wait(1) == [OrderCreated(id="1", amount=1)]


async def test_close_waits_for_running_handlers_and_acks(amqp_events_broker_url: str) -> None:
    started = asyncio.Event()
    finished: Collector[str] = Collector()
    closes: list[BaseException | None] = []
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    conn = Connection("slow", amqp_events_broker_url)

    @conn.event_stream_consumer("Order.Created")
    async def slow(event: OrderCreated) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.add(event.id)

    async with Connection("orders", amqp_events_broker_url) as orders:
        await conn.start(close_listener(closes.append))
        await orders.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="1", amount=1))
        await asyncio.wait_for(started.wait(), 10)
        await conn.close()
        assert finished.items == ["1"]
        assert closes == [None]
    assert await queue_depth(amqp_events_broker_url, "events.topic.exchange.queue.slow") == 0


async def test_publish_many_concurrently_all_arrive_once(amqp_events_broker_url: str) -> None:
    got: Collector[str] = Collector()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with (
        Connection("bulk", amqp_events_broker_url) as conn,
        Connection("orders", amqp_events_broker_url) as orders,
    ):

        @conn.event_stream_consumer("Order.Created")
        async def on_created(event: OrderCreated) -> None:
            got.add(event.id)

        await conn.start()
        await orders.start(event_stream_publisher(publisher))
        await asyncio.gather(
            *(publisher.publish(OrderCreated(id=str(i), amount=i)) for i in range(500))
        )
        assert sorted(await got.wait(500), key=int) == [str(i) for i in range(500)]
        await got.settle()
        assert len(got.items) == 500
