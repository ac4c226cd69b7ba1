"""The hand-written frames against the real broker (issue #18): what the lean path encodes,
RabbitMQ forwards and pamqp (through aio-pika, another client) reads as we meant it, and what the
lean path decodes of the broker's frames is what pamqp decodes of them; bodies over frame_max
are split and joined; thousands of pipelined publishes arrive whole and in order."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aio_pika
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode
from pydantic import BaseModel

from amqp_events import Connection, Publisher, Route, event_stream_publisher
from amqp_events._topology import ConsumerSpec
from amqp_events._transport._base import Delivery, Transport
from tests.unit.test_frame_tables import same, tables

EXCHANGE = "events.topic.exchange"
OURS = "lean-wire-ours"
PAMQP = "lean-wire-pamqp"


class Note(BaseModel):
    text: str


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` varied values of ``strategy``, the same on every run."""
    found: list[Any] = []

    @given(strategy)
    @settings(max_examples=count, deadline=None, derandomize=True, database=None)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


def finite(value: Any) -> bool:
    """No infinite float anywhere in ``value``: RabbitMQ cannot parse one (its channel
    crashes, and the connection closes with INTERNAL_ERROR, whoever encoded it; the public
    API refuses float headers altogether)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(finite, value.values()))
    if isinstance(value, list):
        return all(map(finite, value))
    return True


def through_pamqp(table: dict[str, Any]) -> dict[str, Any]:
    """What pamqp reads of pamqp's own encoding of ``table``: what a peer should see."""
    data = pamqp_encode.field_table(table)
    _, decoded = pamqp_decode.field_table(data)
    return dict(decoded)


async def started(url: str) -> tuple[Connection, Transport, aio_pika.abc.AbstractConnection]:
    """Our connection (its transport) and an aio-pika one with two queues taking ``Wire.#``."""
    ours = Connection("wire", url)
    await ours.start(event_stream_publisher(Publisher(Route(Note, "Note"))))
    transport = ours._transport
    assert transport is not None
    other = await aio_pika.connect(url)
    channel = await other.channel()
    for name in (OURS, PAMQP):
        queue = await channel.declare_queue(name)  # the vhost is the test's: deleted after
        await queue.bind(EXCHANGE, "Wire.#")
    return ours, transport, other


async def test_header_values_of_every_type_cross_the_broker_as_pamqp_reads_them(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    cases = examples(tables.filter(finite), 60)
    ours, transport, other = await started(amqp_events_rabbitmq_vhost_url)
    got: dict[str, Delivery] = {}
    arrived = asyncio.Event()

    async def on_delivery(delivery: Delivery) -> None:
        got[delivery.routing_key] = delivery
        await delivery.ack()
        if len(got) == len(cases):
            arrived.set()

    try:
        await transport.consume(ConsumerSpec(OURS, on_delivery, 50))
        await asyncio.gather(
            *(
                transport.publish(EXCHANGE, f"Wire.{i}", b"{}", headers)
                for i, headers in enumerate(cases)
            )
        )
        await asyncio.wait_for(arrived.wait(), 20)
        channel = await other.channel()
        queue = await channel.get_queue(PAMQP)
        for _ in cases:
            message = await queue.get(timeout=5)
            await message.ack()
            key = message.routing_key
            assert key is not None
            index = int(key.split(".")[1])
            theirs = dict(message.headers)
            mine = dict(got[key].headers)
            # The envelope's per-message headers are not in a raw transport publish.
            assert same(mine, theirs), (key, mine, theirs)
            assert same(theirs, through_pamqp(cases[index])), (key, cases[index], theirs)
            assert got[key].message_id == message.message_id
    finally:
        await other.close()
        await ours.close()


async def test_bodies_over_frame_max_and_thousands_in_flight_arrive_whole_and_in_order(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    ours, transport, other = await started(amqp_events_rabbitmq_vhost_url)
    frame_max = transport.frame_max
    sizes = [0, 1, frame_max - 9, frame_max - 8, frame_max - 7, 3 * frame_max + 5]
    bodies = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    bodies += [f"small-{i}".encode() for i in range(2000)]
    got: list[bytes] = []
    done = asyncio.Event()

    async def on_delivery(delivery: Delivery) -> None:
        got.append(delivery.body)
        await delivery.ack()
        if len(got) == len(bodies):
            done.set()

    try:
        await transport.consume(ConsumerSpec(OURS, on_delivery, 200))
        await asyncio.gather(
            *(transport.publish(EXCHANGE, "Wire.body", body, {}) for body in bodies)
        )
        await asyncio.wait_for(done.wait(), 30)
        assert [len(b) for b in got] == [len(b) for b in bodies]
        assert got == bodies
    finally:
        await other.close()
        await ours.close()
