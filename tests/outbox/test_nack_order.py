"""A refused row amid accepted ones (issue 17, item 4): the broker nacks one row of a partition
and takes the next, as a full ``reject-publish`` queue does. Pipelined (the default), the rows
sent with the refused one are published again after it, so the last copy of each arrives in
order, and the later rows are not sent again with every retry of the refused one; with
``strict_order`` no row reaches the broker before an earlier row of its partition at all.

Deterministic: "Order.Lost" also goes to an audit queue that is full (``max_length=1``,
``reject-publish``), so every publish of it is nacked until the audit queue is drained, while
"Order.Created" always goes through. The shipping queue takes both keys and records the order
in which copies arrive (a nacked publish still reaches the queues that took it)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import (
    Connection,
    Publisher,
    RetryPolicy,
    Route,
    event_stream_consumer,
    event_stream_publisher,
    with_queue_options,
)
from amqp_events.outbox import Outbox, outbox_relay
from tests.helpers import Collector, eventually

from .helpers import KEY, OrderCreated, all_sent, sent_count

LOST = "Order.Lost"
FAST_RETRY = (0.05, 0.2)


class OrderLost(BaseModel):
    id: str


def last_copies_in_order(arrived: list[str], expected: list[str]) -> bool:
    last = {event: index for index, event in enumerate(arrived)}
    return sorted(last, key=last.__getitem__) == expected


@pytest.mark.parametrize("strict_order", [False, True], ids=["pipelined", "strict"])
async def test_rows_sent_with_a_refused_one_come_again_after_it_and_never_with_its_retries(
    engine: AsyncEngine, amqp_events_broker_url: str, strict_order: bool
) -> None:
    url = amqp_events_broker_url
    outbox = Outbox(engine)
    await outbox.create_tables()
    arrived: Collector[str] = Collector()

    async def on_any(event: dict[str, object]) -> None:
        if event["id"] != "prefill":
            arrived.add(str(event["id"]))

    audited: Collector[str] = Collector()

    async def on_lost(event: OrderLost) -> None:
        audited.add(event.id)

    def audit() -> Connection:
        return Connection("audit", url)

    audit_setup = (
        event_stream_consumer(LOST, on_lost, retry=RetryPolicy(attempts=1)),
        with_queue_options(max_length=1, overflow="reject-publish"),
    )
    declare_only = audit()
    await declare_only.start(*audit_setup)
    await declare_only.close()
    shipping = Connection("shipping", url)
    await shipping.start(event_stream_consumer(KEY, on_any), event_stream_consumer(LOST, on_any))
    publisher = Publisher(Route(OrderCreated, KEY), Route(OrderLost, LOST))
    orders = Connection("orders", url)
    drained: Connection | None = None
    try:
        await orders.start(
            event_stream_publisher(publisher),
            outbox_relay(outbox, retry_backoff=FAST_RETRY, strict_order=strict_order),
        )
        await publisher.publish(OrderLost(id="prefill"))  # the audit queue is full from now on
        events: list[BaseModel] = [
            OrderCreated(id="c0"),
            OrderLost(id="lost1"),
            OrderCreated(id="c2"),
            OrderCreated(id="c3"),
        ]
        async with AsyncSession(engine) as session, session.begin():
            for event in events:
                await outbox.publish(session, publisher, event)

        async def refused_and_retried() -> bool:
            blocked = await outbox.blocked_partitions()
            return len(blocked) == 1 and blocked[0].attempts >= 2

        await eventually(refused_and_retried, what="lost1 refused twice")
        assert await sent_count(outbox) == 1  # c0; c2 and c3 wait behind lost1
        first_copies = 0 if strict_order else 1
        await eventually(
            lambda: arrived.items.count("c3") >= first_copies, what="the first copies arrived"
        )
        so_far = list(arrived.items)
        assert so_far.count("c0") == 1
        # Pipelined, c2 and c3 went with lost1's first attempt only, never with its retries.
        assert so_far.count("c2") == so_far.count("c3") == first_copies

        drained = audit()
        await drained.start(*audit_setup)  # the audit queue drains: lost1 goes through
        await eventually(lambda: all_sent(outbox), what="all marked sent", within=20)
        await audited.wait(1, within=10)
        expected = ["c0", "lost1", "c2", "c3"]

        def complete() -> bool:
            got = list(arrived.items)
            return got.count("c3") == (1 if strict_order else 2)

        await eventually(complete, what="the last copies arrived")
        got = list(arrived.items)
        assert last_copies_in_order(got, expected), got
        assert got.count("c2") == got.count("c3") == (1 if strict_order else 2)
        if strict_order:
            assert got.index("c2") > len(got) - 1 - got[::-1].index("lost1"), got
    finally:
        await orders.close()
        await shipping.close()
        if drained is not None:
            await drained.close()
