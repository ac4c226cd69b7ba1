"""A service for the broker commands' tests: it consumes ``Entry.Posted``, and whether its
handler fails is up to the test (``FAIL``); handled ids are recorded in ``HANDLED``.

Its connection takes the broker from ``AMQP_URL`` (``make_ledger`` is called after the test set
it); failures go to the dead-letter queue at once (one attempt).
"""

from __future__ import annotations

from pydantic import BaseModel

from amqp_events import (
    Connection,
    Headers,
    Publisher,
    RetryPolicy,
    Route,
    event_stream_consumer,
    event_stream_publisher,
    with_retry_policy,
)

SERVICE = "ledger-service"
QUEUE = f"events.topic.exchange.queue.{SERVICE}"
DLQ = f"{QUEUE}.dlq"


class EntryPosted(BaseModel):
    id: str
    cents: int


FAIL = {"on": True}
HANDLED: list[tuple[str, str, str | None]] = []  # (id, routing key, a user header)


async def on_posted(event: EntryPosted, headers: Headers) -> None:
    if FAIL["on"]:
        raise ValueError(f"ledger closed for {event.id}")
    HANDLED.append((event.id, "Entry.Posted", headers.get("tenant")))


def make_ledger() -> Connection:
    conn = Connection(SERVICE)
    conn.use(with_retry_policy(RetryPolicy(attempts=1, delays=())))
    conn.use(event_stream_consumer("Entry.Posted", on_posted))
    return conn


def make_poster() -> tuple[Connection, Publisher]:
    publisher = Publisher(Route(EntryPosted, "Entry.Posted"))
    conn = Connection("poster-service")
    conn.use(event_stream_publisher(publisher))
    return conn, publisher
