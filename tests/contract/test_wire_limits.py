"""What the wire cannot carry is refused at once, before anything is sent, on both brokers.

RabbitMQ answers a content header frame over frame_max with FRAME_ERROR and closes the whole
connection; resending it on every new connection would loop. A body over max_message_size
closes the channel. A header pamqp cannot encode used to fail late as "not confirmed".
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_events import (
    ConfigurationError,
    Connection,
    Publisher,
    PublishError,
    Route,
    close_listener,
    event_stream_publisher,
)
from amqp_events._transport._base import Transport
from amqp_events._transport._wire import FRAME_MAX_DEFAULT, MAX_MESSAGE_SIZE_DEFAULT
from tests.helpers import Collector

EXCHANGE = "events.topic.exchange"


class Note(BaseModel):
    text: str


def transport_of(connection: Connection) -> Transport:
    transport = connection._transport
    assert transport is not None
    return transport


async def test_a_header_frame_over_frame_max_fails_at_once_and_the_connection_stays(
    amqp_events_broker_url: str,
) -> None:
    publisher = Publisher(Route(Note, "Note"))
    closes: list[BaseException | None] = []
    async with Connection("writer", amqp_events_broker_url, publish_timeout=5.0) as writer:
        await writer.start(event_stream_publisher(publisher), close_listener(closes.append))
        assert transport_of(writer).frame_max == FRAME_MAX_DEFAULT
        started = asyncio.get_running_loop().time()
        with pytest.raises(PublishError) as error:
            await publisher.publish(Note(text="n"), headers={"big": "y" * 140_000})
        assert asyncio.get_running_loop().time() - started < 1.0
        message = str(error.value)
        assert "content header frame (properties and headers) is 140" in message
        assert f"over the connection's frame_max of {FRAME_MAX_DEFAULT} bytes" in message
        assert "put the data in the body" in message
        await publisher.publish(Note(text="after"), headers={"small": "y"})
        await publisher.publish(Note(text="hot path"))
        assert closes == []  # nothing was sent, so nothing was closed


async def test_a_body_over_max_message_size_is_refused_like_rabbitmq(
    amqp_events_broker_url: str,
) -> None:
    publisher = Publisher(Route(Note, "Note"))
    async with Connection("writer", amqp_events_broker_url, publish_timeout=10.0) as writer:
        await writer.start(event_stream_publisher(publisher))
        with pytest.raises(PublishError) as error:
            await publisher.publish(Note(text="x" * MAX_MESSAGE_SIZE_DEFAULT))
        size = MAX_MESSAGE_SIZE_DEFAULT + len('{"text":""}')
        assert str(error.value) == (
            f"406: publishing to '{EXCHANGE}': PRECONDITION_FAILED - message size {size} is "
            f"larger than configured max size {MAX_MESSAGE_SIZE_DEFAULT}"
        )
        await publisher.publish(Note(text="fits"))


@pytest.mark.parametrize(
    ("headers", "wanted"),
    [
        ({"t": (1, 2)}, "header 't' cannot be encoded: a tuple cannot be encoded by pamqp"),
        ({"b": b"raw"}, "header 'b' cannot be encoded: a bytes value"),
        ({"i": 2**64}, "header 'i' cannot be encoded: the int 18446744073709551616"),
        ({"s": "a\ud800"}, "header 's' cannot be encoded: a str holds a lone surrogate"),
    ],
)
async def test_an_unencodable_header_is_refused_naming_it(
    amqp_events_broker_url: str, headers: dict[str, Any], wanted: str
) -> None:
    async with Connection("writer", amqp_events_broker_url, publish_timeout=5.0) as writer:
        await writer.start()
        with pytest.raises(PublishError, match="not sent") as error:
            await transport_of(writer).publish(EXCHANGE, "Note", b"{}", headers)
        assert wanted in str(error.value)
        assert "not confirmed" not in str(error.value)


async def test_user_headers_are_checked_before_publishing(amqp_events_broker_url: str) -> None:
    publisher = Publisher(Route(Note, "Note"))
    async with Connection("writer", amqp_events_broker_url) as writer:
        await writer.start(event_stream_publisher(publisher))
        with pytest.raises(ConfigurationError, match="header 'f' cannot be sent: the float 0.1"):
            await publisher.publish(Note(text="n"), headers={"f": 0.1})


async def test_headers_arrive_as_pamqp_decodes_them(amqp_events_broker_url: str) -> None:
    got: Collector[dict[str, Any]] = Collector()
    publisher = Publisher(Route(Note, "Note"))
    reader = Connection("reader", amqp_events_broker_url)

    @reader.event_stream_consumer("Note")
    async def on_note(note: Note, headers: Any) -> None:
        got.add(dict(headers))

    async with reader, Connection("writer", amqp_events_broker_url) as writer:
        await reader.start()
        await writer.start(event_stream_publisher(publisher))
        when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        sent = {"half": 0.5, "when": when, "big": 2**40, "raw": bytearray(b"\xff")}
        await publisher.publish(Note(text="n"), headers=sent)
        [headers] = await got.wait(1)
    assert {name: headers[name] for name in sent} == sent
    assert type(headers["raw"]) is bytearray
