"""Pieces shared by the conformance tests: the event, queue names, Watermill's helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel

from amqp_events import Connection, Publisher, Route, event_stream_consumer, event_stream_publisher

EXCHANGE = "events.topic.exchange"
KEY = "Conformance.Msg"


class Msg(BaseModel):
    """Watermill's message: a unique id (its UUID) and a payload."""

    id: str
    n: int


ROUTE = Route(Msg, KEY)


def new_messages(count: int, start: int = 0) -> list[Msg]:
    return [Msg(id=uuid.uuid4().hex, n=start + i) for i in range(count)]


def service_queue(service: str) -> str:
    """The durable queue of ``service`` (README, wire rules)."""
    return f"{EXCHANGE}.queue.{service}"


async def subscribe_initialize(url: str, service: str, *keys: str) -> None:
    """Watermill's ``SubscribeInitialize``: create the service's durable queue and bindings
    before anything is published, then go away. Nothing may arrive meanwhile."""
    unexpected: list[Msg] = []

    async def record(event: Msg) -> None:
        unexpected.append(event)

    async with Connection(service, url) as conn:
        await conn.start(*(event_stream_consumer(key, record, Msg) for key in keys))
    assert unexpected == []


@asynccontextmanager
async def publishing(
    url: str, *routes: Route, service: str = "publisher", **options: Any
) -> AsyncIterator[Publisher]:
    """A started publishing service; ``options`` go to ``Connection``."""
    publisher = Publisher(*routes)
    async with Connection(service, url, **options) as conn:
        await conn.start(event_stream_publisher(publisher))
        yield publisher


async def publish_in_order(
    publisher: Publisher,
    messages: Iterable[BaseModel],
    headers: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Publish one by one, each confirmed before the next is sent."""
    for message in messages:
        key = getattr(message, "id", "")
        await publisher.publish(message, headers=None if headers is None else headers[key])
