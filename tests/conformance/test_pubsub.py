"""Watermill's universal Pub/Sub cases, on the in-memory broker and on RabbitMQ.

A Watermill "topic" is a routing key here, a "subscriber" a ``Connection`` consuming it, a
"consumer group" a service (one durable queue, shared by all connections of the service), and
``Nack()`` a handler that raises.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from pydantic import create_model

from amqp_events import (
    Connection,
    Headers,
    PublishError,
    Route,
    event_stream_consumer,
    transient_event_stream_consumer,
    with_prefetch_limit,
)
from tests.conformance._support import (
    KEY,
    ROUTE,
    Msg,
    new_messages,
    publish_in_order,
    publishing,
    service_queue,
    subscribe_initialize,
)
from tests.helpers import BrokerUnderTest, Collector, queue_depth


def ids(messages: list[Msg]) -> list[str]:
    return [m.id for m in messages]


def collect_ids(into: Collector[str]) -> Callable[[Msg], Awaitable[None]]:
    """A handler that records the id of every message it gets."""

    async def on_msg(event: Msg) -> None:
        into.add(event.id)

    return on_msg


async def test_publish_subscribe(amqp_events_broker_url: str) -> None:
    """Watermill ``TestPublishSubscribe``: 100 messages published before the subscriber runs
    all arrive, each once, with payload and metadata (headers) intact; after the subscriber is
    closed nothing more is delivered to it."""
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    messages = new_messages(100)
    metadata = {m.id: {"test": uuid.uuid4().hex} for m in messages}
    got: Collector[tuple[Msg, dict[str, Any]]] = Collector()
    subscriber = Connection("subscriber", amqp_events_broker_url)

    @subscriber.event_stream_consumer(KEY)
    async def on_msg(event: Msg, headers: Headers) -> None:
        got.add((event, dict(headers)))

    async with publishing(amqp_events_broker_url, ROUTE) as publisher:
        await publish_in_order(publisher, messages, metadata)
        async with subscriber:
            await subscriber.start()
            received = await got.wait(len(messages))

        by_id = {event.id: (event, headers) for event, headers in received}
        assert len(received) == len(by_id) == len(messages)
        for message in messages:
            event, headers = by_id[message.id]
            assert event == message
            assert headers["test"] == metadata[message.id]["test"]
            assert headers["service"] == "publisher"

        # The subscriber is closed: a new message waits in its queue, no handler sees it.
        await publisher.publish(Msg(id="after-close", n=-1))
        assert await queue_depth(amqp_events_broker_url, service_queue("subscriber")) == 1
        assert len(got.items) == len(messages)


async def test_concurrent_subscribe(amqp_events_broker_url: str) -> None:
    """Watermill ``TestConcurrentSubscribe``: several connections of one service share its
    queue. A backlog published before they subscribe and messages published while they run are
    each handled exactly once by the service, and the work is spread over all connections.
    Another service bound to the same key gets its own copy of every message."""
    workers = 5
    await subscribe_initialize(amqp_events_broker_url, "workers", KEY)
    await subscribe_initialize(amqp_events_broker_url, "audit", KEY)
    backlog, live = new_messages(50), new_messages(100, start=50)
    worked: Collector[tuple[int, str]] = Collector()
    audited: Collector[str] = Collector()

    def worker(index: int) -> Connection:
        conn = Connection("workers", amqp_events_broker_url)

        @conn.event_stream_consumer(KEY)
        async def on_msg(event: Msg) -> None:
            worked.add((index, event.id))

        return conn

    audit = Connection("audit", amqp_events_broker_url)

    @audit.event_stream_consumer(KEY)
    async def on_audit(event: Msg) -> None:
        audited.add(event.id)

    connections = [worker(i) for i in range(workers)]
    async with AsyncExitStack() as stack, publishing(amqp_events_broker_url, ROUTE) as publisher:
        for conn in [*connections, audit]:
            await stack.enter_async_context(conn)
        await publish_in_order(publisher, backlog)
        await asyncio.gather(*(conn.start() for conn in [*connections, audit]))
        await publish_in_order(publisher, live)
        await worked.wait(len(backlog) + len(live))
        await audited.wait(len(backlog) + len(live))

    expected = sorted(ids(backlog + live))
    assert sorted(message_id for _, message_id in worked.items) == expected
    assert sorted(audited.items) == expected
    per_connection = Counter(index for index, _ in worked.items)
    assert sorted(per_connection) == list(range(workers)), per_connection


async def test_consumer_groups(amqp_events_broker_url: str) -> None:
    """Watermill ``TestConsumerGroups``: two services (consumer groups), created before the
    publish and each running two connections, both get every message exactly once."""
    groups = ("group-1", "group-2")
    for group in groups:
        await subscribe_initialize(amqp_events_broker_url, group, KEY)
    messages = new_messages(50)
    got: dict[str, Collector[str]] = {group: Collector() for group in groups}

    def member(group: str) -> Connection:
        conn = Connection(group, amqp_events_broker_url)

        @conn.event_stream_consumer(KEY)
        async def on_msg(event: Msg) -> None:
            got[group].add(event.id)

        return conn

    async with publishing(amqp_events_broker_url, ROUTE) as publisher:
        await publish_in_order(publisher, messages)
        async with AsyncExitStack() as stack:
            for group in groups:
                for conn in (member(group), member(group)):
                    await stack.enter_async_context(conn)
                    await conn.start()
            for group in groups:
                await got[group].wait(len(messages))
    for group in groups:
        assert sorted(got[group].items) == sorted(ids(messages)), group


async def test_resend_on_error(amqp_events_broker_url: str) -> None:
    """Watermill ``TestResendOnError``: a handler that fails (Watermill's ``Nack``) gets the
    message again, payload and headers intact, and once it succeeds the message is acked:
    handled successfully once, gone from the queue."""
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    messages = new_messages(20)
    failing = {m.id for m in messages if m.n % 5 == 0}
    metadata = {m.id: {"test": uuid.uuid4().hex} for m in messages}
    attempts: Collector[tuple[Msg, str]] = Collector()
    succeeded: Collector[str] = Collector()
    subscriber = Connection("subscriber", amqp_events_broker_url)

    @subscriber.event_stream_consumer(KEY)
    async def on_msg(event: Msg, headers: Headers) -> None:
        attempts.add((event, headers["test"]))
        if event.id in failing and sum(a.id == event.id for a, _ in attempts.items) == 1:
            raise RuntimeError(f"nack {event.id}")
        succeeded.add(event.id)

    async with publishing(amqp_events_broker_url, ROUTE) as publisher, subscriber:
        await subscriber.start()
        await publish_in_order(publisher, messages, metadata)
        await succeeded.wait(len(messages), within=30)

    assert sorted(succeeded.items) == sorted(ids(messages))  # each acked after one success
    tries = Counter(event.id for event, _ in attempts.items)
    assert all(tries[message_id] >= 2 for message_id in failing), tries
    by_id = {m.id: m for m in messages}
    for event, test_header in attempts.items:
        assert event == by_id[event.id]
        assert test_header == metadata[event.id]["test"]
    assert await queue_depth(amqp_events_broker_url, service_queue("subscriber")) == 0


async def test_no_ack(amqp_events_broker_url: str) -> None:
    """Watermill ``TestNoAck``: with a prefetch of 1, the next message is not delivered while
    the handler of the current one has not finished (not acked); it comes once the first is
    acked, and an acked message is not delivered again."""
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    first, second = new_messages(2)
    release = asyncio.Event()
    got: Collector[str] = Collector()
    subscriber = Connection("subscriber", amqp_events_broker_url)

    @subscriber.event_stream_consumer(KEY)
    async def on_msg(event: Msg) -> None:
        got.add(event.id)
        if event.id == first.id:
            await release.wait()

    async with publishing(amqp_events_broker_url, ROUTE) as publisher, subscriber:
        await publish_in_order(publisher, [first, second])
        await subscriber.start(with_prefetch_limit(1))
        try:
            assert await got.wait(1) == [first.id]
            await got.settle(0.3)
            assert got.items == [first.id], "delivered before the first message was acked"
        finally:
            release.set()
        assert await got.wait(2) == [first.id, second.id]
        await got.settle(0.3)
        assert got.items == [first.id, second.id], "an acked message came again"
    assert await queue_depth(amqp_events_broker_url, service_queue("subscriber")) == 0


async def test_no_ack_redelivered_after_subscriber_closes(broker: BrokerUnderTest) -> None:
    """Watermill ``TestNoAck`` / ``TestSubscribeCtx``, at-least-once: a subscriber closes while
    its handler still runs, so the message was never acked. It goes back to the queue, marked
    redelivered, and the next subscriber of the service handles it."""
    url = broker.url
    queue = service_queue("subscriber")
    await subscribe_initialize(url, "subscriber", KEY)
    [message] = new_messages(1)
    started = asyncio.Event()
    release = asyncio.Event()
    leaving = Connection("subscriber", url, shutdown_timeout=0.2)

    @leaving.event_stream_consumer(KEY)
    async def stuck(event: Msg) -> None:
        started.set()
        await release.wait()

    got: Collector[Msg] = Collector()
    arriving = Connection("subscriber", url)

    @arriving.event_stream_consumer(KEY)
    async def on_msg(event: Msg) -> None:
        got.add(event)

    async with publishing(url, ROUTE) as publisher:
        await publisher.publish(message)
        try:
            await leaving.start()
            await asyncio.wait_for(started.wait(), 10)
            await leaving.close()  # gives up on the handler after shutdown_timeout
            assert await queue_depth(url, queue) == 1
            assert await broker.head_redelivered(queue)
            async with arriving:
                await arriving.start()
                assert await got.wait(1) == [message]
        finally:
            release.set()
    assert await queue_depth(url, queue) == 0


class BatchSubscriber:
    """A subscriber that handles ``batch`` messages, then holds every further one unfinished
    (so unacked) until it is closed; it records handler calls made after its ``close()``."""

    def __init__(self, url: str, batch: int, handled: Collector[str], late: list[str]) -> None:
        self.connection = Connection("subscriber", url, shutdown_timeout=0.2)
        self.connection.event_stream_consumer(KEY)(self.on_msg)
        self.batch = batch
        self.handled = handled
        self.late = late
        self.taken = 0
        self.closed = False
        self.hold = asyncio.Event()

    async def on_msg(self, event: Msg) -> None:
        if self.closed:
            self.late.append(event.id)
        if self.taken >= self.batch:
            await self.hold.wait()  # still running at close: never acked, goes back
            return
        self.taken += 1
        self.handled.add(event.id)

    async def run(self, count: int) -> None:
        """Start, wait until ``count`` messages were handled in all, close."""
        try:
            await self.connection.start(with_prefetch_limit(3))
            await self.handled.wait(count)
            await self.connection.close()
            self.closed = True
        finally:
            self.hold.set()


async def test_continue_after_subscribe_close(amqp_events_broker_url: str) -> None:
    """Watermill ``TestContinueAfterSubscribeClose``: subscribers come and go, each handling a
    batch and closing with more messages in flight. No message is lost: together they handle
    every message, none twice, and no handler starts after its connection's ``close()``."""
    total, batch = 40, 10
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    messages = new_messages(total)
    handled: Collector[str] = Collector()
    late: list[str] = []

    async with publishing(amqp_events_broker_url, ROUTE) as publisher:
        await publish_in_order(publisher, messages)
        for _ in range(2 * total // batch):
            remaining = total - len(set(handled.items))
            if remaining == 0:
                break
            subscriber = BatchSubscriber(amqp_events_broker_url, batch, handled, late)
            await subscriber.run(len(handled.items) + min(batch, remaining))

    assert late == []
    assert sorted(set(handled.items)) == sorted(ids(messages))
    assert len(handled.items) == total, Counter(handled.items).most_common(3)
    assert await queue_depth(amqp_events_broker_url, service_queue("subscriber")) == 0


async def test_concurrent_close(amqp_events_broker_url: str) -> None:
    """Watermill ``TestConcurrentClose``: ten subscribers of one service started and closed
    concurrently leave it working: a later subscriber gets every message published after."""

    async def ignore(event: Msg) -> None:
        raise AssertionError("nothing was published yet")

    async def start_and_close() -> None:
        async with Connection("subscriber", amqp_events_broker_url) as conn:
            await conn.start(event_stream_consumer(KEY, ignore))

    await asyncio.gather(*(start_and_close() for _ in range(10)))
    messages = new_messages(50)
    got: Collector[str] = Collector()

    async def on_msg(event: Msg) -> None:
        got.add(event.id)

    async with publishing(amqp_events_broker_url, ROUTE) as publisher:
        await publish_in_order(publisher, messages)
    async with Connection("subscriber", amqp_events_broker_url) as conn:
        await conn.start(event_stream_consumer(KEY, on_msg))
        assert sorted(await got.wait(len(messages))) == sorted(ids(messages))


async def test_continue_after_errors(amqp_events_broker_url: str) -> None:
    """Watermill ``TestContinueAfterErrors``, adapted: a handler that keeps failing on some
    messages does not stop the subscriber; every other message is still handled, once.
    (Watermill's nacked messages come back forever; ours are retried a bounded number of
    times, so the failing ones are not expected to succeed.)"""
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    messages = new_messages(30)
    poison = {m.id for m in messages if m.n % 10 == 3}
    failures: Collector[str] = Collector()
    handled: Collector[str] = Collector()
    subscriber = Connection("subscriber", amqp_events_broker_url, shutdown_timeout=1)

    @subscriber.event_stream_consumer(KEY)
    async def on_msg(event: Msg) -> None:
        if event.id in poison:
            failures.add(event.id)
            raise RuntimeError(f"cannot handle {event.id}")
        handled.add(event.id)

    async with publishing(amqp_events_broker_url, ROUTE) as publisher, subscriber:
        await publish_in_order(publisher, messages)
        await subscriber.start()
        good = [m.id for m in messages if m.id not in poison]
        assert sorted(await handled.wait(len(good))) == sorted(good)
        assert set(await failures.wait(len(poison))) == poison


SEQUENCE_KEYS = [f"Seq.k{i}" for i in range(16)]
# One event type per routing key: a route maps a type to exactly one key.
SEQUENCE_TYPES = [create_model(f"Seq{i}", __base__=Msg) for i in range(len(SEQUENCE_KEYS))]


async def test_publish_subscribe_in_order(amqp_events_broker_url: str) -> None:
    """Watermill ``TestPublishSubscribeInOrder``: messages of 16 kinds (routing keys) published
    one after another, half before the subscriber runs and half while it runs, reach a single
    subscriber with a prefetch of 1 in publish order for every kind."""
    await subscribe_initialize(amqp_events_broker_url, "ordered", "Seq.*")
    events = [SEQUENCE_TYPES[i % 16](id=uuid.uuid4().hex, n=i) for i in range(160)]
    got: Collector[Msg] = Collector()

    async def on_msg(event: Msg) -> None:
        got.add(event)

    routes = [Route(t, k) for t, k in zip(SEQUENCE_TYPES, SEQUENCE_KEYS, strict=True)]
    async with (
        publishing(amqp_events_broker_url, *routes) as publisher,
        Connection("ordered", amqp_events_broker_url) as subscriber,
    ):
        await publish_in_order(publisher, events[:80])
        await subscriber.start(event_stream_consumer("Seq.*", on_msg, Msg), with_prefetch_limit(1))
        await publish_in_order(publisher, events[80:])
        received = await got.wait(len(events))

    assert len(received) == len(events)
    for kind in range(16):
        sent = [e.id for e in events if e.n % 16 == kind]
        assert [e.id for e in received if e.n % 16 == kind] == sent, SEQUENCE_KEYS[kind]


TopicOne = create_model("TopicOne", __base__=Msg)
TopicTwo = create_model("TopicTwo", __base__=Msg)


async def test_topic(amqp_events_broker_url: str) -> None:
    """Watermill ``TestTopic``: a subscriber gets only the topics (routing keys) it subscribed
    to, and each of a service's handlers only its own key."""
    both: dict[str, Collector[str]] = {"one": Collector(), "two": Collector()}
    only_two: Collector[str] = Collector()
    a = TopicTwo(id="a", n=0)
    b = TopicOne(id="b", n=1)
    c = TopicTwo(id="c", n=2)  # after b: once c arrived, a misrouted b would have too

    async def on_one(event: Msg) -> None:
        both["one"].add(event.id)

    async def on_two(event: Msg) -> None:
        both["two"].add(event.id)

    async def on_only_two(event: Msg) -> None:
        only_two.add(event.id)

    async with (
        Connection("both-topics", amqp_events_broker_url) as both_conn,
        Connection("topic-two", amqp_events_broker_url) as two_conn,
        publishing(
            amqp_events_broker_url, Route(TopicOne, "Topic.One"), Route(TopicTwo, "Topic.Two")
        ) as pub,
    ):
        await both_conn.start(
            event_stream_consumer("Topic.One", on_one, Msg),
            event_stream_consumer("Topic.Two", on_two, Msg),
            with_prefetch_limit(1),
        )
        await two_conn.start(event_stream_consumer("Topic.Two", on_only_two, Msg))
        await publish_in_order(pub, [a, b, c])
        assert await only_two.wait(2) == ["a", "c"]
        assert await both["two"].wait(2) == ["a", "c"]
        assert both["one"].items == ["b"]


async def test_new_subscriber_receives_only_new_messages(amqp_events_broker_url: str) -> None:
    """Watermill ``TestNewSubscriberReceivesOldMessages``, for the opposite feature RabbitMQ
    has: a transient subscriber gets exactly the messages published after it subscribed, while
    a service's durable queue keeps what was published while the service was away."""
    await subscribe_initialize(amqp_events_broker_url, "durable", KEY)
    messages = new_messages(4)
    transient: list[Collector[str]] = []
    durable: Collector[str] = Collector()

    async def on_durable(event: Msg) -> None:
        durable.add(event.id)

    async with AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(publishing(amqp_events_broker_url, ROUTE))
        await publisher.publish(messages[0])  # before any transient subscriber
        for joined, message in enumerate(messages[1:], start=1):
            got: Collector[str] = Collector()
            conn = await stack.enter_async_context(Connection("viewer", amqp_events_broker_url))
            await conn.start(
                transient_event_stream_consumer(KEY, collect_ids(got), Msg),
                with_prefetch_limit(1),
            )
            transient.append(got)
            await publisher.publish(message)
            for subscribed, collector in enumerate(transient, start=1):
                expected = ids(messages[subscribed : joined + 1])
                assert await collector.wait(len(expected)) == expected
        conn = await stack.enter_async_context(Connection("durable", amqp_events_broker_url))
        await conn.start(event_stream_consumer(KEY, on_durable), with_prefetch_limit(1))
        assert await durable.wait(len(messages)) == ids(messages)


async def test_publisher_close(amqp_events_broker_url: str) -> None:
    """Watermill ``TestPublisherClose``: many messages published by 20 concurrent publishers,
    then the publishing connection is closed at once; every publish that returned is consumed
    exactly once, and publishing after close fails clearly."""
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    messages = new_messages(500)
    pending: asyncio.Queue[Msg] = asyncio.Queue()
    for message in messages:
        pending.put_nowait(message)

    async with publishing(amqp_events_broker_url, ROUTE) as publisher:

        async def publish_worker() -> None:
            while not pending.empty():
                await publisher.publish(pending.get_nowait())

        await asyncio.gather(*(publish_worker() for _ in range(20)))
    try:
        await publisher.publish(Msg(id="after-close", n=-1))
    except PublishError:
        pass
    else:
        raise AssertionError("publish after close did not raise PublishError")

    got: Collector[str] = Collector()

    async def on_msg(event: Msg) -> None:
        got.add(event.id)

    async with Connection("subscriber", amqp_events_broker_url) as subscriber:
        await subscriber.start(event_stream_consumer(KEY, on_msg))
        assert sorted(await got.wait(len(messages))) == sorted(ids(messages))
        await got.settle()
        assert len(got.items) == len(messages)


async def publish_then_close(
    url: str, count: int, close_after: int
) -> tuple[set[str], list[BaseException]]:
    """Start ``count`` publishes at once, close the publishing connection once ``close_after``
    were confirmed; the ids confirmed, and the publishes that failed other than with
    ``PublishError``."""
    confirmed: set[str] = set()
    enough = asyncio.Event()
    async with publishing(url, ROUTE, publish_timeout=5) as publisher:

        async def publish(message: Msg) -> None:
            await publisher.publish(message)
            confirmed.add(message.id)
            if len(confirmed) == close_after:
                enough.set()

        tasks = [asyncio.ensure_future(publish(m)) for m in new_messages(count)]
        await asyncio.wait_for(enough.wait(), 10)
    async with asyncio.timeout(10):  # no publish may hang past the close
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return confirmed, [r for r in results if r is not None and not isinstance(r, PublishError)]


async def test_publisher_close_while_publishing(amqp_events_broker_url: str) -> None:
    """Watermill ``TestPublisherClose``, closing mid-stream, repeated as Watermill's
    ``TestPubSubStressTest`` repeats its cases (the race is narrow): the publishing connection
    closes while publishes are in flight. Each publish either returns, and then its message is
    consumed, or raises ``PublishError``; none hangs or fails with anything else."""
    await subscribe_initialize(amqp_events_broker_url, "subscriber", KEY)
    confirmed: set[str] = set()
    for round_ in range(100):
        confirmed_now, unexpected = await publish_then_close(
            amqp_events_broker_url, 30, close_after=5
        )
        confirmed |= confirmed_now
        assert unexpected == [], f"round {round_}: {[(type(e), e) for e in unexpected]}"

    got: Collector[str] = Collector()

    async def on_msg(event: Msg) -> None:
        got.add(event.id)

    async with Connection("subscriber", amqp_events_broker_url) as subscriber:
        await subscriber.start(event_stream_consumer(KEY, on_msg))
        async with asyncio.timeout(20):
            while not confirmed <= set(got.items):
                await got.wait(len(got.items) + 1)
