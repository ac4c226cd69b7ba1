"""The inbox (issue 17, item 7): a duplicate is absorbed, two instances handling one message at
once run it once, a crash rolls back writes and record together, messages without an id are
handled every time, and events published through the outbox from a handler commit with it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, Headers, Metadata, RetryPolicy, event_stream_publisher
from amqp_events.outbox import Inbox, Outbox, outbox_relay
from tests.helpers import BrokerUnderTest, Collector

from .helpers import KEY, OrderCreated, create_effects, effect_counts, effects, order_publisher

FAST_RETRY = RetryPolicy(attempts=3, delays=(0.05,))


async def make_inbox(engine: AsyncEngine) -> Inbox:
    inbox = Inbox(engine)
    await inbox.create_tables()
    await create_effects(engine)
    return inbox


async def inbox_records(inbox: Inbox) -> int:
    async with AsyncSession(inbox._db.engine) as session:
        count = await session.scalar(select(func.count()).select_from(inbox.table))
    return int(count or 0)


async def test_a_redelivered_message_changes_nothing_and_one_without_id_always_runs(
    engine: AsyncEngine, amqp_events_broker_url: str, request: pytest.FixtureRequest
) -> None:
    inbox = await make_inbox(engine)
    ran: Collector[str] = Collector()
    shipping = Connection("shipping", amqp_events_broker_url)

    @shipping.event_stream_consumer(KEY)
    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession) -> None:
        await session.execute(effects.insert().values(order_id=event.id))
        ran.add(event.id)

    broker = BrokerUnderTest.for_test(amqp_events_broker_url, request)
    await shipping.start()
    try:
        for _ in range(3):  # the same message three times: a publish resent, a lost ack ...
            await broker.raw_publish(
                "events.topic.exchange", KEY, b'{"id": "dup"}', {}, message_id="m-1"
            )
        await broker.raw_publish(
            "events.topic.exchange", KEY, b'{"id": "other"}', {}, message_id="m-2"
        )
        await ran.wait(2)
        await ran.settle(0.3)
    finally:
        await shipping.close()
    assert await effect_counts(engine) == {"dup": 1, "other": 1}
    consumer = f"{reserve.__module__}.{reserve.__qualname__}"
    assert await inbox.handled("m-1", consumer=consumer)
    assert await inbox_records(inbox) == 2


def metadata_without_id(attempt: int = 1) -> Metadata:
    return Metadata(
        message_id=None,
        correlation_id=None,
        causation_id=None,
        source="goamqp-service",
        time=None,
        type=KEY,
        version=1,
        attempt=attempt,
        redelivered=False,
    )


async def test_a_message_without_id_is_handled_every_time_without_a_record(
    engine: AsyncEngine,
) -> None:
    # A goamqp publisher sends no message id (and aio-pika, the memory broker and so our
    # raw test publishes always add one), so the handler is called as dispatch calls it.
    inbox = await make_inbox(engine)

    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession) -> None:
        await session.execute(effects.insert().values(order_id=event.id))

    for _ in range(2):
        await reserve(OrderCreated(id="no-id"), Headers({}, metadata_without_id))
    assert await effect_counts(engine) == {"no-id": 2}
    assert await inbox_records(inbox) == 0


async def test_two_instances_given_one_message_at_once_run_it_once(
    engine: AsyncEngine, amqp_events_broker_url: str, request: pytest.FixtureRequest
) -> None:
    inbox = await make_inbox(engine)
    entered: Collector[str] = Collector()
    both_delivered = asyncio.Event()
    instances = [Connection("shipping", amqp_events_broker_url) for _ in range(2)]
    for instance in instances:

        @instance.event_stream_consumer(KEY)
        @inbox.idempotent(consumer="shipping.reserve")
        async def reserve(event: OrderCreated, session: AsyncSession, headers: Headers) -> None:
            entered.add(event.id)
            await session.execute(effects.insert().values(order_id=event.id))
            # Hold the transaction open while the other instance gets its copy.
            await asyncio.wait_for(both_delivered.wait(), 0.5)

    broker = BrokerUnderTest.for_test(amqp_events_broker_url, request)
    for instance in instances:
        await instance.start()
    try:
        for _ in range(2):
            await broker.raw_publish(
                "events.topic.exchange", KEY, b'{"id": "twice"}', {}, message_id="m-2"
            )
        await entered.wait(1)
        await asyncio.sleep(0.3)  # the second copy is delivered and waits on the record
        both_delivered.set()
        await entered.settle(0.5)
    finally:
        for instance in instances:
            await instance.close()
    assert await effect_counts(engine) == {"twice": 1}
    assert await inbox.handled("m-2", consumer="shipping.reserve")


async def test_a_handler_that_raises_rolls_back_its_writes_its_record_and_its_events(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    inbox = await make_inbox(engine)
    outbox = Outbox(engine)
    await outbox.create_tables()
    follow_up = order_publisher()
    attempts: Collector[int] = Collector()
    shipping = Connection("shipping", amqp_events_broker_url)

    @shipping.event_stream_consumer(KEY, retry=FAST_RETRY)
    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession, headers: Headers) -> None:
        await session.execute(effects.insert().values(order_id=event.id))
        await outbox.publish(session, follow_up, OrderCreated(id=f"{event.id}-shipped"))
        attempts.add(headers.metadata.attempt)
        if headers.metadata.attempt == 1:
            raise RuntimeError("crash after the writes")

    orders = Connection("orders", amqp_events_broker_url)
    trigger = order_publisher()
    # The follow-up events need a started publisher to be written; no relay: they stay.
    await shipping.start(event_stream_publisher(follow_up))
    await orders.start(event_stream_publisher(trigger))
    try:
        await trigger.publish(OrderCreated(id="o-1"))
        assert await attempts.wait(2) == [1, 2]
        await attempts.settle(0.3)
    finally:
        await orders.close()
        await shipping.close()
    assert await effect_counts(engine) == {"o-1": 1}
    assert await inbox_records(inbox) == 1
    assert await outbox.pending() == 1  # the follow-up of the attempt that committed only


async def test_the_relay_and_the_inbox_give_exactly_once_effects_end_to_end(
    engine: AsyncEngine, amqp_events_broker_url: str
) -> None:
    inbox = await make_inbox(engine)
    outbox = Outbox(engine)
    await outbox.create_tables()
    publisher = order_publisher()
    handled: Collector[str] = Collector()
    shipping = Connection("shipping", amqp_events_broker_url)

    @shipping.event_stream_consumer(KEY)
    @inbox.idempotent
    async def reserve(event: OrderCreated, session: AsyncSession) -> None:
        await session.execute(effects.insert().values(order_id=event.id))
        handled.add(event.id)

    orders = Connection("orders", amqp_events_broker_url)
    await shipping.start()
    await orders.start(event_stream_publisher(publisher), outbox_relay(outbox))
    try:
        async with AsyncSession(engine) as session, session.begin():
            for i in range(50):
                await outbox.publish(session, publisher, OrderCreated(id=f"e-{i}"), headers={})
        await handled.wait(50)
    finally:
        await orders.close()
        await shipping.close()
    assert await effect_counts(engine) == {f"e-{i}": 1 for i in range(50)}
