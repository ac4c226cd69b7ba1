"""The seed's example as a runnable demo: order, stat and shipping services.

order-service publishes Order.Created and Order.Updated; stat-service consumes Order.Created;
shipping-service consumes both with one handler (two bindings on its one queue), exactly as the
goamqp example does.
"""

from __future__ import annotations

import asyncio
import uuid

from pydantic import BaseModel

# The public API only, as a user's service would import it (and immune to internal moves).
from . import (
    ConfigurationError,
    Connection,
    Headers,
    Publisher,
    Route,
    event_stream_consumer,
    event_stream_publisher,
)

__all__ = ["run_demo"]


class OrderCreated(BaseModel):
    id: str
    amount: int


class OrderUpdated(BaseModel):
    id: str
    amount: int


async def run_demo(url: str, *, orders: int = 3, wait_seconds: float = 15.0) -> bool:
    """Run the three services on ``url``; True when every event reached every consumer.

    ``orders=0`` is a run with nothing to send: the services start, declare and stop.
    """
    if orders < 0:
        raise ConfigurationError(f"demo: orders={orders}: must be 0 or more")
    run = uuid.uuid4().hex[:8]  # a durable queue may hold events of an earlier run: skip those
    expected = {
        "stat-service": {("Order.Created", f"{run}-{i}") for i in range(orders)},
        "shipping-service": {
            (key, f"{run}-{i}") for i in range(orders) for key in ("Order.Created", "Order.Updated")
        },
    }
    received: dict[str, set[tuple[str, str]]] = {name: set() for name in expected}
    done = asyncio.Event()

    def record(
        service: str, key: str, event: OrderCreated | OrderUpdated, headers: Headers
    ) -> None:
        if not event.id.startswith(run):
            return
        print(f"[{service}] {key} id={event.id} amount={event.amount} from {headers.service}")
        received[service].add((key, event.id))
        if received == expected:
            done.set()

    async def on_stat(event: OrderCreated, headers: Headers) -> None:
        record("stat-service", "Order.Created", event, headers)

    async def handle_order_event(event: OrderCreated | OrderUpdated, headers: Headers) -> None:
        match event:
            case OrderCreated():
                record("shipping-service", "Order.Created", event, headers)
            case OrderUpdated():
                record("shipping-service", "Order.Updated", event, headers)

    publisher = Publisher(
        Route(OrderCreated, "Order.Created"),
        Route(OrderUpdated, "Order.Updated"),
    )
    async with (
        Connection("stat-service", url) as stat,
        Connection("shipping-service", url) as shipping,
        Connection("order-service", url) as orders_conn,
    ):
        await stat.start(event_stream_consumer("Order.Created", on_stat))
        await shipping.start(
            event_stream_consumer("Order.Created", handle_order_event, OrderCreated),
            event_stream_consumer("Order.Updated", handle_order_event, OrderUpdated),
        )
        await orders_conn.start(event_stream_publisher(publisher))
        for i in range(orders):
            await publisher.publish(OrderCreated(id=f"{run}-{i}", amount=10 * (i + 1)))
            await publisher.publish(OrderUpdated(id=f"{run}-{i}", amount=10 * (i + 1) + 5))
        if received == expected:  # nothing was expected: no orders
            done.set()
        try:
            async with asyncio.timeout(wait_seconds):
                await done.wait()
        except TimeoutError:
            for service, wanted in expected.items():
                for key, order_id in sorted(wanted - received[service]):
                    print(f"[{service}] MISSING {key} id={order_id}")
            return False
    if orders == 0:
        print("demo: no orders to send; the three services started and stopped")
    else:
        deliveries = sum(len(v) for v in expected.values())
        print(f"demo: every event arrived ({deliveries} deliveries)")
    return True
