"""The hot path without a broker: the link splits what it reads between its hot channels and
aiormq, writes once per loop turn, and a confirming channel settles each publish exactly once
(ack, nack, return, timeout, the channel's end), whatever order the broker answers in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from amqp_events._transport._frames import (
    Confirm,
    Delivered,
    Properties,
    Returned,
    encode_properties,
)
from amqp_events._transport._lean_link import ChannelClosedByBroker, LeanLink
from amqp_events._transport._lean_publish import (
    ConfirmingChannel,
    Nacked,
    ReturnedByBroker,
    properties_for,
)


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.aborted = True


class FakeWriter:
    def __init__(self) -> None:
        self.transport = FakeTransport()


class Recorder:
    def __init__(self) -> None:
        self.records: list[Delivered | Returned | Confirm] = []
        self.failure: BaseException | None = None

    def received(self, record: Delivered | Returned | Confirm) -> None:
        self.records.append(record)

    def closed(self, exc: BaseException) -> None:
        self.failure = exc


def attached_link() -> tuple[LeanLink, list[bytes], FakeTransport]:
    link = LeanLink()
    forwarded: list[bytes] = []
    writer: Any = FakeWriter()
    link.attach(asyncio.get_running_loop(), forwarded.append, writer)
    return link, forwarded, writer.transport


def method(channel: int, frame: Any) -> bytes:
    return pamqp_frame.marshal(frame, channel)


def ack(channel: int, tag: int, *, multiple: bool = False) -> bytes:
    return method(channel, spec.Basic.Ack(tag, multiple))


async def test_hot_frames_are_handled_and_the_rest_fed_on_to_aiormq_in_order() -> None:
    link, forwarded, _ = attached_link()
    hot = Recorder()
    link.register(1, hot)
    qos_ok = method(2, spec.Basic.QosOk())
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    body = b'{"id": 1}'
    header = pamqp_frame.marshal(
        pamqp_header.ContentHeader(0, len(body), spec.Basic.Properties(message_id="m-1")), 1
    )
    deliver = method(1, spec.Basic.Deliver("ctag", 7, False, "ex", "key"))
    body_frame = b"\x03\x00\x01" + len(body).to_bytes(4, "big") + body + b"\xce"
    stream = qos_ok + ack(1, 3) + heartbeat + deliver + header + body_frame
    for cut in (5, 30, 61):  # split mid-frame, as a socket does
        stream_parts = [stream[:cut], stream[cut:]]
        hot.records.clear()
        forwarded.clear()
        for part in stream_parts:
            link.received(part)
        assert b"".join(forwarded) == qos_ok + heartbeat
        confirm, delivered = hot.records
        assert confirm == Confirm(1, 3, False, True)
        assert isinstance(delivered, Delivered)
        assert (delivered.delivery_tag, delivered.body) == (7, body)
        assert delivered.properties.message_id == "m-1"


async def test_a_channel_close_from_the_broker_unregisters_the_channel_before_aiormq_sees_it() -> (
    None
):
    link, forwarded, transport = attached_link()
    hot = Recorder()
    link.register(1, hot)
    link.write(b"pending")
    close = method(1, spec.Channel.Close(404, "NOT_FOUND - no exchange 'x'", 60, 40))

    link.received(close)

    assert isinstance(hot.failure, ChannelClosedByBroker)
    assert (hot.failure.code, hot.failure.text) == (404, "NOT_FOUND - no exchange 'x'")
    assert transport.writes == [b"pending"]  # written before aiormq's Close-Ok can be
    assert forwarded == [close]
    link.received(ack(1, 1))  # a frame after the close is aiormq's now
    assert forwarded[-1] == ack(1, 1)


async def test_writes_of_one_loop_turn_go_out_in_one_write() -> None:
    link, _, transport = attached_link()
    link.write(b"a")
    link.write_parts([b"b", memoryview(b"cd")])
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"abcd"]


async def test_malformed_frames_end_the_connection_and_fail_every_hot_channel() -> None:
    link, _, transport = attached_link()
    hot = Recorder()
    link.register(1, hot)
    frame = bytearray(ack(1, 1))
    frame[-1] = 0x00  # not the frame-end octet

    link.received(bytes(frame))

    assert transport.aborted
    assert hot.failure is not None
    assert "frame-end" in str(hot.failure)
    assert link.is_lost


async def test_a_stream_of_hot_frames_only_tells_aiormq_the_connection_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, forwarded, _ = attached_link()
    link.register(1, Recorder())
    loop = asyncio.get_running_loop()
    now = loop.time()
    link.received(ack(1, 1))
    assert forwarded == []
    monkeypatch.setattr(loop, "time", lambda: now + 1.5)
    link.received(ack(1, 2))
    assert forwarded == [b"\x08\x00\x00\x00\x00\x00\x00\xce"]


def publish(channel: ConfirmingChannel, message_id: str, **kwargs: Any) -> asyncio.Future[None]:
    options: dict[str, Any] = {"mandatory": False, "timeout": 30.0, **kwargs}
    return channel.publish(
        "ex", "key", b"{}", encode_properties(Properties()), message_id=message_id, **options
    )


async def test_confirms_settle_each_publish_once_in_any_order_multiple_or_not() -> None:
    link, _, _ = attached_link()
    channel = ConfirmingChannel(link, 1, 131072, asyncio.get_running_loop())
    link.register(1, channel)
    futures = [publish(channel, f"m-{i}") for i in range(6)]

    link.received(ack(1, 2))  # tag 2 alone
    link.received(ack(1, 4, multiple=True))  # 1, 3, 4
    link.received(method(1, spec.Basic.Nack(6)))
    link.received(ack(1, 6))  # a second answer for 6 changes nothing
    link.received(ack(1, 5, multiple=True))

    assert [f.done() for f in futures] == [True] * 6
    assert [f.exception() for f in futures[:5]] == [None] * 5
    assert isinstance(futures[5].exception(), Nacked)


async def test_a_returned_mandatory_publish_fails_as_returned_when_its_confirm_comes() -> None:
    link, _, _ = attached_link()
    channel = ConfirmingChannel(link, 1, 131072, asyncio.get_running_loop())
    link.register(1, channel)
    kept = publish(channel, "m-1", mandatory=True)
    returned = publish(channel, "m-2", mandatory=True)
    body = b"{}"
    link.received(
        method(1, spec.Basic.Return(312, "NO_ROUTE", "ex", "key"))
        + pamqp_frame.marshal(
            pamqp_header.ContentHeader(0, len(body), spec.Basic.Properties(message_id="m-2")), 1
        )
        + b"\x03\x00\x01\x00\x00\x00\x02{}\xce"
    )
    assert not returned.done()  # the return comes before its confirm
    link.received(ack(1, 2, multiple=True))

    assert kept.result() is None
    error = returned.exception()
    assert isinstance(error, ReturnedByBroker)
    assert error.code == 312


async def test_publishes_past_their_deadline_time_out_and_their_late_confirm_is_ignored() -> None:
    link, _, _ = attached_link()
    channel = ConfirmingChannel(link, 1, 131072, asyncio.get_running_loop())
    link.register(1, channel)
    slow = publish(channel, "m-1", timeout=30.0)
    quick = publish(channel, "m-2", timeout=0.05)  # re-arms the timer for the earlier deadline

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(quick, 2.0)
    assert not slow.done()
    link.received(ack(1, 2, multiple=True))
    assert slow.result() is None


async def test_the_end_of_the_channel_fails_what_waits_and_refuses_what_comes() -> None:
    link, _, _ = attached_link()
    channel = ConfirmingChannel(link, 1, 131072, asyncio.get_running_loop())
    link.register(1, channel)
    waiting = publish(channel, "m-1")
    gone = ConnectionError("connection lost")

    link.lost(gone)

    assert waiting.exception() is gone
    with pytest.raises(ConnectionError):
        publish(channel, "m-2")


async def test_constant_properties_are_encoded_once_per_headers_object() -> None:
    headers = {"service": "orders"}
    assert properties_for(headers, None) is properties_for(headers, None)
    assert properties_for(headers, None) is not properties_for(dict(headers), None)
    assert properties_for(headers, "text/plain") is not properties_for(headers, None)


class FakeAiormqChannel:
    number = 2


def delivery_frames(channel: int, tag: int) -> bytes:
    body = b"{}"
    return (
        method(channel, spec.Basic.Deliver("ctag", tag, False, "ex", "key"))
        + pamqp_frame.marshal(
            pamqp_header.ContentHeader(0, len(body), spec.Basic.Properties()), channel
        )
        + b"\x03\x00"
        + bytes([channel])
        + len(body).to_bytes(4, "big")
        + body
        + b"\xce"
    )


def written_settlements(transport: FakeTransport) -> list[tuple[str, int, bool]]:
    """The acks and rejects written, as (kind, tag, multiple or requeue)."""
    data = b"".join(transport.writes)
    found: list[tuple[str, int, bool]] = []
    while data:
        _, _, frame = pamqp_frame.unmarshal(data)
        size = int.from_bytes(data[3:7], "big") + 8
        data = data[size:]
        if isinstance(frame, spec.Basic.Ack):
            found.append(("ack", frame.delivery_tag, frame.multiple))
        elif isinstance(frame, spec.Basic.Reject):
            found.append(("reject", frame.delivery_tag or 0, frame.requeue))
    return found


async def test_acks_of_one_turn_below_every_unsettled_delivery_go_as_one_multiple_ack() -> None:
    from amqp_events._transport._lean_consume import ConsumingChannel

    link, _, transport = attached_link()
    got: dict[int, Any] = {}

    async def on_delivery(delivery: Any) -> None:
        got[delivery._tag] = delivery

    channel: Any = FakeAiormqChannel()
    consuming = ConsumingChannel(link, channel, asyncio.get_running_loop())
    consuming.add("ctag", on_delivery)
    link.register(2, consuming)
    link.received(b"".join(delivery_frames(2, tag) for tag in range(1, 7)))
    await asyncio.sleep(0)  # the callbacks' tasks run
    assert sorted(got) == [1, 2, 3, 4, 5, 6]

    await got[2].ack()
    await got[1].ack()
    await got[3].ack()
    await got[5].reject(requeue=False)  # 4 is still being handled
    await got[6].ack()
    for _ in range(3):
        await asyncio.sleep(0)
    assert written_settlements(transport) == [
        ("reject", 5, False),  # at once: before any ack that could cover it
        ("ack", 3, True),  # 1, 2 and 3: below 4, which is unsettled
        ("ack", 6, False),  # above 4: alone
    ]
    transport.writes.clear()
    await got[4].ack()
    for _ in range(3):
        await asyncio.sleep(0)
    assert written_settlements(transport) == [("ack", 4, False)]


async def test_a_long_burst_is_written_as_it_grows_not_only_at_the_end_of_the_turn() -> None:
    from amqp_events._transport._lean_link import FLUSH_AT

    link, _, transport = attached_link()
    chunk = b"x" * 1000
    for _ in range(FLUSH_AT // 1000 + 1):
        link.write(chunk)
    assert len(transport.writes) == 1  # the broker starts on these at once
    link.write(chunk)
    await asyncio.sleep(0)
    assert [len(w) for w in transport.writes] == [(FLUSH_AT // 1000 + 1) * 1000, 1000]
