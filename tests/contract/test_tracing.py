"""OpenTelemetry tracing (``with_tracing``), on both brokers: a trace started in one service
continues through a second into a third; spans are named and attributed as the messaging
conventions say; retries and dead letters are events; payloads never appear."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from amqp_events import (
    Connection,
    Headers,
    Publisher,
    RetryPolicy,
    Route,
    event_stream_publisher,
    with_tracing,
)
from amqp_events.testing import run_until_idle
from tests.helpers import Collector


class OrderCreated(BaseModel):
    id: str
    secret: str = "s3cr3t-payload"


class PaymentRequested(BaseModel):
    order: str


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def named(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in finished if s.name == name]
    assert len(found) == 1, (name, [s.name for s in finished])
    return found[0]


async def test_a_trace_continues_through_three_services(
    amqp_events_broker_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    seen: Collector[tuple[str, dict[str, object]]] = Collector()
    orders_publisher = Publisher(Route(OrderCreated, "Order.Created"))
    payments_publisher = Publisher(Route(PaymentRequested, "Payment.Requested"))
    orders = Connection("orders", amqp_events_broker_url)
    payments = Connection("payments", amqp_events_broker_url)
    billing = Connection("billing", amqp_events_broker_url)

    @payments.event_stream_consumer("Order.*")
    async def request_payment(event: OrderCreated) -> None:
        with tracer.start_as_current_span("charge card"):
            await payments_publisher.publish(PaymentRequested(order=event.id))

    @billing.event_stream_consumer("Payment.Requested")
    async def bill(event: PaymentRequested, headers: Headers) -> None:
        seen.add(("billing", dict(headers)))
        seen.add(("baggage", {"tenant": baggage.get_baggage("tenant")}))

    async with orders, payments, billing:
        await billing.start(with_tracing(provider))
        await payments.start(event_stream_publisher(payments_publisher), with_tracing(provider))
        await orders.start(event_stream_publisher(orders_publisher), with_tracing(provider))
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tracer.start_as_current_span("checkout"):
                await orders_publisher.publish(OrderCreated(id="42"))
        finally:
            context.detach(token)
        got = dict(await seen.wait(2))
    assert got["baggage"] == {"tenant": "acme"}
    assert "traceparent" in got["billing"]

    finished = exporter.get_finished_spans()
    root = named(finished, "checkout")
    publish_order = named(finished, "publish events.topic.exchange:Order.Created")
    process_order = named(
        finished, "process events.topic.exchange:Order.*:events.topic.exchange.queue.payments"
    )
    charge = named(finished, "charge card")
    publish_payment = named(finished, "publish events.topic.exchange:Payment.Requested")
    process_payment = named(
        finished,
        "process events.topic.exchange:Payment.Requested:events.topic.exchange.queue.billing",
    )
    chain = [root, publish_order, process_order, charge, publish_payment, process_payment]
    assert root.context is not None
    trace_id = root.context.trace_id
    assert all(s.context is not None and s.context.trace_id == trace_id for s in chain)
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert parent.context is not None
        assert child.parent.span_id == parent.context.span_id, child.name
    assert [s.kind for s in chain[1:]] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.INTERNAL,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]

    sent = dict(publish_order.attributes or {})
    assert sent["messaging.system"] == "rabbitmq"
    assert sent["messaging.operation.type"] == "send"
    assert sent["messaging.operation.name"] == "publish"
    assert sent["messaging.destination.name"] == "events.topic.exchange:Order.Created"
    assert sent["messaging.rabbitmq.destination.routing_key"] == "Order.Created"
    assert sent["amqp_events.outcome"] == "confirmed"
    handled = dict(process_order.attributes or {})
    assert handled["messaging.operation.type"] == "process"
    assert handled["messaging.destination.name"] == (
        "events.topic.exchange:Order.Created:events.topic.exchange.queue.payments"
    )
    assert handled["messaging.destination.subscription.name"] == (
        "events.topic.exchange.queue.payments"
    )
    assert handled["messaging.message.id"] == sent["messaging.message.id"]
    assert handled["messaging.message.conversation_id"] == sent["messaging.message.id"]
    assert handled["amqp_events.outcome"] == "acked"
    # The conversation (correlation id) goes on across the hops.
    payment_attributes = dict(process_payment.attributes or {})
    assert payment_attributes["messaging.message.conversation_id"] == sent["messaging.message.id"]
    for span in finished:  # never a payload
        assert "s3cr3t-payload" not in repr(dict(span.attributes or {}))
        assert all("s3cr3t-payload" not in repr(e.attributes) for e in span.events)


async def test_a_retry_and_a_dead_letter_are_events_with_the_exception_recorded(
    amqp_events_broker_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    conn = Connection("fragile", amqp_events_broker_url)

    @conn.event_stream_consumer("Order.Created", retry=RetryPolicy(attempts=2, delays=[0.05]))
    async def always_fails(event: OrderCreated) -> None:
        raise RuntimeError("card declined")

    async with conn:
        await conn.start(event_stream_publisher(publisher), with_tracing(provider))
        await run_until_idle(conn, publish=[(publisher, OrderCreated(id="7"))])

    finished = exporter.get_finished_spans()
    consumers = [s for s in finished if s.kind is SpanKind.CONSUMER]
    producer = named(finished, "publish events.topic.exchange:Order.Created")
    assert len(consumers) == 2  # the first attempt and the retry
    first, second = sorted(consumers, key=lambda s: s.start_time or 0)
    for span in (first, second):  # both continue the publisher's trace
        assert span.parent is not None
        assert producer.context is not None
        assert span.parent.span_id == producer.context.span_id
        exceptions = [e for e in span.events if e.name == "exception"]
        assert [dict(e.attributes or {})["exception.type"] for e in exceptions] == ["RuntimeError"]
        assert dict(exceptions[0].attributes or {})["exception.message"] == "card declined"
    assert [e.name for e in first.events] == ["exception", "amqp_events.retry"]
    assert dict(first.attributes or {})["amqp_events.outcome"] == "retried"
    assert [e.name for e in second.events] == ["exception", "amqp_events.dead_letter"]
    dead = dict(second.events[1].attributes or {})
    assert dead["amqp_events.dead_letter.reason"] == "handler-failed"
    assert dict(second.attributes or {})["amqp_events.outcome"] == "dead_lettered"
    assert second.status.status_code is StatusCode.ERROR


async def test_without_tracing_nothing_is_traced_or_injected(
    amqp_events_broker_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    seen: Collector[dict[str, object]] = Collector()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    conn = Connection("plain", amqp_events_broker_url)

    @conn.event_stream_consumer("Order.Created")
    async def handle(event: OrderCreated, headers: Headers) -> None:
        seen.add(dict(headers))

    async with conn:
        await conn.start(event_stream_publisher(publisher))
        with provider.get_tracer("test").start_as_current_span("outer"):
            await publisher.publish(OrderCreated(id="1"))
        (headers,) = await seen.wait(1)
    assert "traceparent" not in headers
    assert [s.name for s in exporter.get_finished_spans()] == ["outer"]
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_huge_baggage_is_left_out_and_the_publish_still_goes(
    amqp_events_broker_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Baggage can grow without limit; the frame the envelope adds to cannot: what does not fit
    is left out, the trace still continues."""
    provider, _ = spans
    got: Collector[dict[str, object]] = Collector()
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    conn = Connection("big-baggage", amqp_events_broker_url)

    @conn.event_stream_consumer("Order.Created")
    async def on_created(event: OrderCreated, headers: Headers) -> None:
        got.add(dict(headers))

    async with conn:
        await conn.start(event_stream_publisher(publisher), with_tracing(provider))
        token = context.attach(baggage.set_baggage("blob", "x" * 200_000))
        try:
            with provider.get_tracer("test").start_as_current_span("root"):
                await publisher.publish(OrderCreated(id="1"))
        finally:
            context.detach(token)
        [headers] = await got.wait(1)
    assert isinstance(headers.get("traceparent"), str)
    assert "baggage" not in headers
