"""Tracing through the outbox (``with_tracing``): an event written in a span is published by the
relay later, outside it, yet its publish span is that span's child and the consumer's span
continues the same trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from amqp_events import Connection, event_stream_publisher, with_tracing
from amqp_events.outbox import Outbox, outbox_relay
from tests.helpers import Collector

from .helpers import KEY, OrderCreated, order_publisher


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def one(finished: tuple[ReadableSpan, ...], kind: SpanKind) -> ReadableSpan:
    found = [s for s in finished if s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in finished]
    return found[0]


async def test_a_relayed_event_continues_the_trace_it_was_written_in(
    engine: AsyncEngine,
    amqp_events_broker_url: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    outbox = Outbox(engine)
    await outbox.create_tables()
    got: Collector[str] = Collector()
    publisher = order_publisher()
    shipping = Connection("shipping", amqp_events_broker_url)

    @shipping.event_stream_consumer(KEY)
    async def ship(event: OrderCreated) -> None:
        got.add(event.id)

    orders = Connection("orders", amqp_events_broker_url)
    async with shipping, orders:
        await shipping.start(with_tracing(provider))
        await orders.start(
            event_stream_publisher(publisher), outbox_relay(outbox), with_tracing(provider)
        )
        with tracer.start_as_current_span("checkout") as checkout:
            async with AsyncSession(engine) as session, session.begin():
                await outbox.publish(session, publisher, OrderCreated(id="o-1"))
        assert await got.wait(1) == ["o-1"]
    finished = exporter.get_finished_spans()
    publish = one(finished, SpanKind.PRODUCER)
    process = one(finished, SpanKind.CONSUMER)
    trace_id = checkout.get_span_context().trace_id
    assert publish.context is not None
    assert process.context is not None
    assert publish.context.trace_id == process.context.trace_id == trace_id
    assert publish.parent is not None
    assert process.parent is not None
    assert publish.parent.span_id == checkout.get_span_context().span_id
    assert process.parent.span_id == publish.context.span_id
    assert publish.name == f"publish events.topic.exchange:{KEY}"
