"""``request(timeout=...)`` bounds the whole wait: for a ``max_pending`` slot, for the publish's
confirm and for the response. The same on both brokers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Publisher,
    RequestTimeout,
    Route,
    service_publisher,
    service_request_consumer,
)


class Quote(BaseModel):
    item: str
    count: int


class Price(BaseModel):
    item: str
    total: int


async def test_waiting_for_a_max_pending_slot_counts_in_the_timeout(
    amqp_events_broker_url: str,
) -> None:
    release = asyncio.Event()
    busy = asyncio.Event()
    handled: list[str] = []

    async def slow_price(request: Quote) -> Price:
        handled.append(request.item)
        busy.set()
        await release.wait()
        return Price(item=request.item, total=request.count * 3)

    to_billing = Publisher(Route(Quote, "Quote"))
    async with (
        Connection("billing", amqp_events_broker_url) as billing,
        Connection("shop", amqp_events_broker_url) as shop,
    ):
        await billing.start(service_request_consumer("Quote", slow_price))
        await shop.start(service_publisher("billing", to_billing, awaitable=True, max_pending=1))
        first = asyncio.ensure_future(to_billing.request(Quote(item="tea", count=1), Price))
        await asyncio.wait_for(busy.wait(), 5)  # the one slot is held by the slow responder
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(RequestTimeout, match="still waiting for one of the max_pending slots"):
            await asyncio.wait_for(
                to_billing.request(Quote(item="jam", count=1), Price, timeout=0.3), 5
            )
        assert loop.time() - began < 2  # the timeout, not the responder, ended it
        release.set()
        assert await first == Price(item="tea", total=3)
        assert handled == ["tea"]  # the timed-out request was never sent
