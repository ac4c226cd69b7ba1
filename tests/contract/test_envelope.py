"""Every message we publish carries the envelope, on both brokers: ids, time, CloudEvents
attributes, and a correlation that flows from handler to handler with no code in them."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Headers,
    MessageContextFilter,
    Metadata,
    Publisher,
    RetryPolicy,
    Route,
    SetupBuilder,
    event_stream_publisher,
)
from amqp_events._transport.memory import broker_for_url
from tests.helpers import Collector, eventually


class OrderCreated(BaseModel):
    id: str


class PaymentRequested(BaseModel):
    order: str


class ShipmentRequested(BaseModel):
    order: str


@dataclass
class Taken:
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    timestamp: datetime | None
    content_type: str | None


async def take(url: str, queue: str) -> Taken:
    """The head message of ``queue``, with its properties, as any client reads it."""
    if url.startswith("memory:"):
        snapshot = broker_for_url(url).get(queue)
        assert snapshot is not None, f"{queue!r} is empty"
        props = snapshot.properties
        return Taken(
            snapshot.body,
            dict(snapshot.headers),
            props.message_id,
            props.timestamp,
            props.content_type,
        )
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        message = await declared.get(no_ack=True, fail=True)
        assert message is not None
        return Taken(
            message.body,
            dict(message.headers),
            message.message_id,
            message.timestamp,
            message.content_type,
        )


def probe(queue: str, key: str) -> Any:
    """A setup that binds a queue of its own to the events stream, unconsumed."""

    def apply(builder: SetupBuilder) -> None:
        builder.declare_exchange("events.topic.exchange")
        builder.declare_queue(queue)
        builder.bind(queue, "events.topic.exchange", key)

    return apply


async def test_a_published_event_carries_the_whole_envelope(amqp_events_broker_url: str) -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with Connection("orders", amqp_events_broker_url) as conn:
        await conn.start(event_stream_publisher(publisher), probe("probe", "Order.#"))
        before = datetime.now(UTC).replace(microsecond=0)
        await publisher.publish(OrderCreated(id="1"), headers={"tenant": "t1"})
        taken = await take(amqp_events_broker_url, "probe")
    assert taken.message_id is not None
    assert uuid.UUID(taken.message_id).version == 4
    headers = taken.headers
    assert headers == {
        "service": "orders",
        "tenant": "t1",
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": taken.message_id,
        "cloudEvents:source": "orders",
        "cloudEvents:type": "Order.Created",
        "cloudEvents:datacontenttype": "application/json",
        "cloudEvents:time": headers["cloudEvents:time"],
        "cloudEvents:correlationid": taken.message_id,  # a conversation starts here
    }
    sent_at = datetime.fromisoformat(headers["cloudEvents:time"])
    assert before <= sent_at <= datetime.now(UTC)
    assert taken.timestamp is not None
    assert taken.timestamp.replace(tzinfo=UTC) == sent_at
    assert taken.content_type == "application/json"
    assert taken.body == b'{"id":"1"}'


async def test_correlation_and_causation_flow_across_three_hops(
    amqp_events_broker_url: str,
) -> None:
    seen: Collector[tuple[str, Metadata]] = Collector()
    orders_publisher = Publisher(Route(OrderCreated, "Order.Created"))
    payments_publisher = Publisher(Route(PaymentRequested, "Payment.Requested"))
    shipping_publisher = Publisher(Route(ShipmentRequested, "Shipment.Requested"))
    orders = Connection("orders", amqp_events_broker_url)
    payments = Connection("payments", amqp_events_broker_url)
    shipping = Connection("shipping", amqp_events_broker_url)
    tracking = Connection("tracking", amqp_events_broker_url)

    @payments.event_stream_consumer("Order.Created")
    async def request_payment(event: OrderCreated, metadata: Metadata) -> None:
        seen.add(("payments", metadata))
        await payments_publisher.publish(PaymentRequested(order=event.id))

    @shipping.event_stream_consumer("Payment.Requested")
    async def request_shipment(event: PaymentRequested, headers: Headers) -> None:
        seen.add(("shipping", headers.metadata))
        await shipping_publisher.publish(ShipmentRequested(order=event.order))

    @tracking.event_stream_consumer("Shipment.Requested")
    async def track(event: ShipmentRequested, headers: Headers, metadata: Metadata) -> None:
        assert headers.metadata == metadata
        seen.add(("tracking", metadata))

    async with orders, payments, shipping, tracking:
        await tracking.start()
        await shipping.start(event_stream_publisher(shipping_publisher))
        await payments.start(event_stream_publisher(payments_publisher))
        await orders.start(event_stream_publisher(orders_publisher))
        await orders_publisher.publish(OrderCreated(id="42"))
        hops = dict(await seen.wait(3))
    first, second, third = hops["payments"], hops["shipping"], hops["tracking"]
    assert first.message_id is not None
    assert first.correlation_id == first.message_id
    assert first.causation_id is None
    assert second.correlation_id == third.correlation_id == first.message_id
    assert second.causation_id == first.message_id
    assert third.causation_id == second.message_id
    assert len({first.message_id, second.message_id, third.message_id}) == 3
    assert [m.source for m in (first, second, third)] == ["orders", "payments", "shipping"]
    assert [m.type for m in (first, second, third)] == [
        "Order.Created",
        "Payment.Requested",
        "Shipment.Requested",
    ]
    for metadata in (first, second, third):
        assert metadata.time is not None
        assert abs((datetime.now(UTC) - metadata.time).total_seconds()) < 30
        assert (metadata.version, metadata.attempt, metadata.redelivered) == (1, 1, False)


async def test_the_message_id_stays_the_same_through_retries_and_the_dead_letter(
    amqp_events_broker_url: str,
) -> None:
    attempts: Collector[Metadata] = Collector()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    conn = Connection("fragile", amqp_events_broker_url)

    @conn.event_stream_consumer("Order.Created", retry=RetryPolicy(attempts=2, delays=[0.05]))
    async def always_fails(event: OrderCreated, metadata: Metadata) -> None:
        attempts.add(metadata)
        raise RuntimeError("down")

    async with conn:
        await conn.start(event_stream_publisher(publisher))
        await publisher.publish(OrderCreated(id="7"))
        first, second = await attempts.wait(2)
        await conn.close()
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.message_id == second.message_id is not None
    assert first.correlation_id == second.correlation_id == first.message_id
    assert first.time == second.time
    dead = await take(amqp_events_broker_url, "events.topic.exchange.queue.fragile.dlq")
    assert dead.message_id == first.message_id
    assert dead.headers["cloudEvents:id"] == first.message_id
    assert dead.headers["cloudEvents:correlationid"] == first.message_id


async def test_log_records_about_a_message_carry_its_ids(
    amqp_events_broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The dead-letter warning of an undecodable message names its ids (MessageContextFilter),
    though no handler ever ran."""
    caplog.handler.addFilter(MessageContextFilter())
    caplog.set_level(logging.WARNING, logger="amqp_events")
    conn = Connection("strict", amqp_events_broker_url)

    @conn.event_stream_consumer("Order.Created")
    async def on_created(event: OrderCreated) -> None:
        raise AssertionError("an undecodable body reaches no handler")

    def dead_letter_warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "dead-lettering" in r.getMessage()]

    wrong = Publisher(Route(PaymentRequested, "Order.Created"))  # a body of the wrong shape
    async with conn:
        await conn.start(event_stream_publisher(wrong))
        await wrong.publish(PaymentRequested(order="x"))
        # A log record is announced by no event: wait for it as for broker-side state.
        await eventually(lambda: bool(dead_letter_warnings()), what="the dead-letter warning")
    with_message_log = dead_letter_warnings()
    [record] = with_message_log
    taken = await take(amqp_events_broker_url, "events.topic.exchange.queue.strict.dlq")
    assert record.message_id == taken.message_id  # type: ignore[attr-defined]
    assert record.correlation_id == taken.message_id  # type: ignore[attr-defined]
