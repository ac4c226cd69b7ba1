"""Request/response between two services: an awaited request, and goamqp's handler style."""

import asyncio
import os

from pydantic import BaseModel

from amqp_events import (
    Connection,
    Publisher,
    RemoteError,
    Route,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
)

URL = os.environ.get("AMQP_URL", "memory://")


class Quote(BaseModel):
    item: str
    count: int


class Price(BaseModel):
    item: str
    total: int


async def price(request: Quote) -> Price:  # billing answers: the return value is the response
    if request.count <= 0:
        raise ValueError(f"cannot price {request.count} of {request.item}")
    return Price(item=request.item, total=request.count * 3)


async def main() -> None:
    to_billing = Publisher(Route(Quote, "Quote"))
    responses: asyncio.Queue[Price] = asyncio.Queue(maxsize=10)

    async def on_price(response: Price) -> None:  # goamqp style: responses to a handler
        await responses.put(response)

    async with Connection("billing", URL) as billing, Connection("shop", URL) as shop:
        await billing.start(service_request_consumer("Quote", price))
        await shop.start(
            service_publisher("billing", to_billing, awaitable=True),
            service_response_consumer("billing", "Quote", on_price),
        )

        # Awaited: the response comes back to this call, matched by correlation id.
        total = await to_billing.request(Quote(item="tea", count=2), Price, timeout=5.0)
        print("awaited:", total)

        # The responder's error reaches the caller as an error, not as a timeout.
        try:
            await to_billing.request(Quote(item="tea", count=0), Price, timeout=5.0)
        except RemoteError as exc:
            print("remote error:", exc.error_type, exc.message)

        # Fire and forget: the response goes to the response handler.
        await to_billing.publish(Quote(item="cake", count=1))
        print("handled:", await asyncio.wait_for(responses.get(), 5.0))


if __name__ == "__main__":
    asyncio.run(main())
