import asyncio
import os

from pydantic import BaseModel

from amqp_events import Connection, Headers, Publisher, Route, event_stream_publisher


class OrderCreated(BaseModel):
    id: str
    amount: int


publisher = Publisher(Route(OrderCreated, "Order.Created"))  # type -> routing key
conn = Connection("order-service", os.environ.get("AMQP_URL", "memory://"))
received = asyncio.Event()


@conn.event_stream_consumer("Order.Created")  # the event type comes from the annotation
async def on_created(event: OrderCreated, headers: Headers) -> None:
    print("order", event.id, "from", headers.service)
    received.set()


async def main() -> None:
    async with conn:  # close() on exit: stop consuming, let running handlers finish
        await conn.start(event_stream_publisher(publisher))  # declare, then consume
        await publisher.publish(OrderCreated(id="1", amount=5))  # confirmed by the broker
        await asyncio.wait_for(received.wait(), timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
