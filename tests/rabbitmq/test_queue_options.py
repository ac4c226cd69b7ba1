"""Opt-in queue options on the real broker (not goamqp-compatible), and TLS."""

from __future__ import annotations

import ssl

import pytest
from pydantic import BaseModel

from amqp_events import (
    BrokerConnectionError,
    Connection,
    Publisher,
    Route,
    event_stream_publisher,
    with_queue_options,
)
from amqp_events.testing import VhostView
from tests.helpers import Collector


class Note(BaseModel):
    n: int


async def test_quorum_single_active_consumer_queue(
    amqp_events_rabbitmq_vhost_url: str, amqp_events_rabbitmq_admin: VhostView
) -> None:
    got: Collector[int] = Collector()
    publisher = Publisher(Route(Note, "Note"))
    reader = Connection("reader", amqp_events_rabbitmq_vhost_url)

    @reader.event_stream_consumer("Note")
    async def on_note(note: Note) -> None:
        got.add(note.n)

    async with reader, Connection("writer", amqp_events_rabbitmq_vhost_url) as writer:
        await reader.start(with_queue_options(quorum=True, single_active_consumer=True))
        await writer.start(event_stream_publisher(publisher))
        await publisher.publish(Note(n=1))
        assert await got.wait(1) == [1]
        queue = amqp_events_rabbitmq_admin.queue("events.topic.exchange.queue.reader")
    assert queue.arguments == {
        "x-expires": 432000000,
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
    }


async def test_tls_handshake_failure_is_a_clear_connection_error(
    amqp_events_rabbitmq_url: str,
) -> None:
    # A TLS client against the plain AMQP port: the handshake fails, and says where.
    url = amqp_events_rabbitmq_url.replace("amqp://", "amqps://", 1).replace(
        "guest:guest@", "guest:s3cret@"
    )
    context = ssl.create_default_context()
    conn = Connection("tls", url, ssl_context=context, connect_timeout=3)
    with pytest.raises(BrokerConnectionError, match="cannot connect") as info:
        await conn.start()
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(conn)
