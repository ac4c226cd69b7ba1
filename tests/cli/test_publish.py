"""``amqp-events publish``: one event by hand, with the envelope, confirmed; a service reads it
as any other event."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_events import Connection, Headers, Metadata
from tests.cli.conftest import Result
from tests.helpers import Collector

Cli = Callable[..., Awaitable[Result]]


class OrderCreated(BaseModel):
    id: str


async def test_a_published_event_reaches_a_service_with_the_envelope(
    amqp_events_rabbitmq_vhost_url: str, acli: Any
) -> None:
    got: Collector[tuple[OrderCreated, Headers, Metadata]] = Collector()
    conn = Connection("stat", amqp_events_rabbitmq_vhost_url)

    @conn.event_stream_consumer("Order.Created")
    async def on_created(event: OrderCreated, headers: Headers, metadata: Metadata) -> None:
        got.add((event, headers, metadata))

    async with conn:
        await conn.start()
        result = await acli(
            "publish",
            "events.topic.exchange",
            "Order.Created",
            '{"id": "42"}',
            "--url",
            amqp_events_rabbitmq_vhost_url,
            "--service",
            "operator",
            "--header",
            "tenant=t1",
            "--header",
            "priority=3",
        )
        assert result.code == 0, result.err
        [(event, headers, metadata)] = await got.wait(1)
    assert event == OrderCreated(id="42")
    assert metadata.message_id is not None
    assert uuid.UUID(metadata.message_id).version == 4
    assert f"message id {metadata.message_id}" in result.out
    assert (metadata.source, metadata.type, metadata.correlation_id) == (
        "operator",
        "Order.Created",
        metadata.message_id,
    )
    assert metadata.time is not None
    assert (headers["tenant"], headers["priority"], headers.service) == ("t1", 3, "operator")


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["events.topic.exchange", "Nobody.Listens", "{}"], 1, "nothing is bound"),
        (["no.such.exchange", "K", "{}"], 4, "exchange 'no.such.exchange' does not exist"),
        (["events.topic.exchange", "K", "[1]"], 2, "an event is a JSON object, got JSON list"),
        (["events.topic.exchange", "K", "{"], 2, "JSON is not valid JSON"),
        (["events.topic.exchange", "K", "{}", "--header", "nope"], 2, "takes name=value"),
        (["events.topic.exchange", "K", "{}", "--header", "cloudEvents:id=x"], 2, "envelope"),
    ],
)
async def test_what_cannot_be_published_says_why(
    amqp_events_rabbitmq_vhost_url: str,
    acli: Any,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    async with Connection("declarer", amqp_events_rabbitmq_vhost_url) as conn:
        await conn.start(lambda builder: builder.declare_exchange("events.topic.exchange"))
    result = await acli("publish", *argv, "--url", amqp_events_rabbitmq_vhost_url)
    assert result.code == code, result.err
    assert message in result.err
    assert result.err.count("\n") == 1  # one line, no traceback


async def test_publish_refuses_the_in_memory_broker(acli: Any) -> None:
    result = await acli("publish", "x", "k", "{}", "--url", "memory://")
    assert result.code == 2
    assert "in-memory broker" in result.err
