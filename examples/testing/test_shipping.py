"""Testing a service three ways: in memory, on RabbitMQ, and on both with one test.

The fixtures come from the amqp-events pytest plugin, active once amqp-events is installed;
async tests need pytest-asyncio (``asyncio_mode = "auto"`` here).
"""

from collections.abc import Callable

from pydantic import BaseModel

from amqp_events import (
    Connection,
    MemoryBroker,
    Publisher,
    Reject,
    Route,
    event_stream_publisher,
)
from amqp_events.testing import run_until_idle


class OrderCreated(BaseModel):
    id: str
    amount: int


shipped: list[str] = []


async def ship(order: OrderCreated) -> None:
    """The handler under test."""
    if order.amount <= 0:
        raise Reject(f"nothing to ship for {order.id}")
    shipped.append(order.id)


async def start_services(make: Callable[[str], Connection]) -> tuple[Connection, Publisher]:
    shipping, orders = make("shipping"), make("orders")
    shipping.event_stream_consumer("Order.Created")(ship)
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    await shipping.start()
    await orders.start(event_stream_publisher(publisher))
    return shipping, publisher


# 1. Fast, no broker: the in-memory broker follows RabbitMQ's rules.
async def test_in_memory(amqp_events_memory_broker: MemoryBroker) -> None:
    def make(name: str) -> Connection:
        return Connection(name, amqp_events_memory_broker.url)

    shipping, publisher = await start_services(make)
    outcome = await run_until_idle(
        shipping,
        publish=[
            (publisher, OrderCreated(id="1", amount=5)),
            (publisher, OrderCreated(id="2", amount=0)),
        ],
    )
    assert outcome.events("shipping") == [OrderCreated(id="1", amount=5)]
    assert [d.reason for d in outcome.dead_lettered] == ["rejected"]
    await shipping.close()


# 2. On RabbitMQ: AMQP_URL, else a local broker, else a testcontainers container; each test on
#    a vhost of its own, deleted afterwards.
async def test_on_rabbitmq(amqp_events_rabbitmq_vhost_url: str) -> None:
    connections: list[Connection] = []

    def make(name: str) -> Connection:
        connections.append(Connection(name, amqp_events_rabbitmq_vhost_url))
        return connections[-1]

    shipping, publisher = await start_services(make)
    outcome = await run_until_idle(shipping, publish=[(publisher, OrderCreated(id="3", amount=1))])
    assert outcome.events() == [OrderCreated(id="3", amount=1)]
    for connection in connections:
        await connection.close()


# 3. One test, run on both brokers: amqp_events_connection_factory closes what it made.
async def test_on_both(amqp_events_connection_factory: Callable[[str], Connection]) -> None:
    shipping, publisher = await start_services(amqp_events_connection_factory)
    outcome = await run_until_idle(shipping, publish=[(publisher, OrderCreated(id="4", amount=2))])
    assert outcome.events("shipping") == [OrderCreated(id="4", amount=2)]
