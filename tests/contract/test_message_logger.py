"""The message logger sees a message on receipt, before its handler, as goamqp's does."""

from __future__ import annotations

from pydantic import BaseModel

from amqp_events import (
    Connection,
    LoggedMessage,
    Publisher,
    Retry,
    Route,
    event_stream_consumer,
    event_stream_publisher,
    with_message_logger,
)
from tests.helpers import Collector


class Ping(BaseModel):
    n: int


async def test_in_is_logged_before_the_handler_runs_and_for_each_delivery(
    amqp_events_broker_url: str,
) -> None:
    logged: list[LoggedMessage] = []
    seen_by_handler: Collector[list[str]] = Collector()
    publisher = Publisher(Route(Ping, "Ping"))

    async def handler(event: Ping) -> None:
        seen_by_handler.add([m.direction for m in logged if m.where.endswith(".queue.pong")])
        if len(seen_by_handler.items) == 1:
            raise Retry(delay=0.05)  # fails once: the retry is received, and logged, again

    async with Connection("pong", amqp_events_broker_url) as conn:
        await conn.start(
            event_stream_consumer("Ping", handler),
            event_stream_publisher(publisher),
            with_message_logger(logged.append),
        )
        await publisher.publish(Ping(n=1))
        assert await seen_by_handler.wait(2) == [["in"], ["in", "in"]]
    received = [m for m in logged if m.direction == "in"]
    assert [(m.service, m.routing_key, m.event) for m in received] == [
        ("pong", "Ping", Ping(n=1)),
        ("pong", "Ping", Ping(n=1)),
    ]
    assert [m.direction for m in logged if m.direction != "in"] == ["out"]
