"""goamqp's README example (an order service, a stat service, a shipping service), ported
line by line; docs/porting-from-goamqp.md shows the Go beside it."""

import asyncio
import os

from pydantic import BaseModel

from amqp_events import (
    Connection,
    Headers,
    Publisher,
    Route,
    event_stream_consumer,
    event_stream_publisher,
)

amqp_url = os.environ.get("AMQP_URL", "memory://")


class OrderCreated(BaseModel):
    id: str


class OrderUpdated(BaseModel):
    id: str


handled = asyncio.Queue[str]()


async def handle_stat_event(msg: OrderCreated, headers: Headers) -> None:
    match msg:
        case OrderCreated():
            print("Increasing order count")
    await handled.put("stat")


async def handle_shipping_event(msg: OrderCreated | OrderUpdated, headers: Headers) -> None:
    match msg:
        case OrderCreated():
            print("Order created")
        case OrderUpdated():
            print("Order updated")
    await handled.put("shipping")


async def main() -> None:
    order_publisher = Publisher(
        Route(OrderCreated, "Order.Created"),
        Route(OrderUpdated, "Order.Updated"),
    )
    order_service_connection = Connection("order-service", amqp_url)
    await order_service_connection.start(event_stream_publisher(order_publisher))

    stat_connection = Connection("stat-service", amqp_url)
    await stat_connection.start(
        event_stream_consumer("Order.Created", handle_stat_event, OrderCreated),
    )

    shipping_connection = Connection("shipping-service", amqp_url)
    await shipping_connection.start(
        event_stream_consumer("Order.Created", handle_shipping_event, OrderCreated),
        event_stream_consumer("Order.Updated", handle_shipping_event, OrderUpdated),
    )

    await order_publisher.publish(OrderCreated(id="id"))
    await order_publisher.publish(OrderUpdated(id="id"))

    for _ in range(3):  # stat: the created order; shipping: both
        await asyncio.wait_for(handled.get(), timeout=10)
    for connection in (shipping_connection, stat_connection, order_service_connection):
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
