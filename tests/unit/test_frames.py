"""The hot-path AMQP frames (``_transport._frames``) against pamqp, the oracle: frames we write
are the bytes pamqp writes and read back as pamqp reads them; a stream pamqp writes, cut
anywhere, reads as the same records; every malformed stream fails naming what is wrong."""

from __future__ import annotations

import itertools
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp import heartbeat as pamqp_heartbeat

from amqp_events._transport._frames import (
    Confirm,
    Delivered,
    FrameError,
    FrameReader,
    Properties,
    RawFrame,
    Record,
    Returned,
    basic_ack_frame,
    basic_nack_frame,
    basic_reject_frame,
    content_frames,
    encode_properties,
    publish_frames,
    publish_method_frame,
)

FAST = settings(max_examples=60, deadline=None, derandomize=True)
FRAME_MAX = 4096  # AMQP's smallest, so that bodies of a few frames stay small
CHUNK = FRAME_MAX - 8

utf8 = st.characters(codec="utf-8", exclude_categories=["Cs"])
shortstrs = st.text(utf8, max_size=100).filter(lambda value: len(value.encode()) <= 255)
tags = st.integers(0, 2**63 - 1)  # pamqp writes delivery tags signed
PROPS = Properties(
    content_type="application/json",
    headers={"service": "orders", "n": 5, "nested": {"list": [1, "two", None]}},
    delivery_mode=2,
    message_id="m-1",
    timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    app_id="svc",
)


def pamqp_properties(props: Properties) -> spec.Basic.Properties:
    fields = {name: getattr(props, name) for name in spec.Basic.Properties.__slots__}
    fields["cluster_id"] = props.cluster_id or ""
    return spec.Basic.Properties(**fields)


def pamqp_content(channel: int, body: bytes, props: Properties, frame_max: int) -> bytes:
    """Content frames as aiormq has pamqp write them: body frames of frame_max - 8 bytes."""
    chunk = frame_max - 8
    header = pamqp_header.ContentHeader(0, len(body), pamqp_properties(props))
    frames = [pamqp_frame.marshal(header, channel)]
    for start in range(0, len(body), chunk):
        piece = pamqp_body.ContentBody(body[start : start + chunk])
        frames.append(pamqp_frame.marshal(piece, channel))
    return b"".join(frames)


def unmarshal_all(data: bytes) -> list[tuple[int, Any]]:
    frames, pos = [], 0
    while pos < len(data):
        used, channel, frame = pamqp_frame.unmarshal(data[pos:])
        frames.append((channel, frame))
        pos += used
    return frames


def read_all(data: bytes, frame_max: int = FRAME_MAX, cuts: list[int] | None = None) -> list[Any]:
    reader = FrameReader(frame_max)
    records: list[Record] = []
    edges = [0, *sorted(cuts or []), len(data)]
    for start, stop in itertools.pairwise(edges):
        records += reader.feed(data[start:stop])
    assert reader.buffered == 0
    return records


# -- frames we write ------------------------------------------------------------------------------


@FAST
@given(
    st.integers(0, 65535),
    st.from_regex(r"[a-zA-Z0-9\-_.:]{0,127}", fullmatch=True),
    shortstrs,
    st.booleans(),
)
def test_publish_method_frame_is_pamqps(
    channel: int, exchange: str, routing_key: str, mandatory: bool
) -> None:
    method = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    expected = pamqp_frame.marshal(method, channel)
    assert publish_method_frame(channel, exchange, routing_key, mandatory=mandatory) == expected


@FAST
@given(shortstrs, shortstrs)
def test_publish_method_frame_carries_any_utf8_names(exchange: str, routing_key: str) -> None:
    # pamqp refuses to write exchange names outside [a-zA-Z0-9-_.:@#,/+ ]; RabbitMQ takes UTF-8.
    data = publish_method_frame(7, exchange, routing_key, mandatory=True)
    used, channel, method = pamqp_frame.unmarshal(data)
    assert (used, channel) == (len(data), 7)
    assert isinstance(method, spec.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory) == (exchange, routing_key, True)
    assert method.immediate is False


def test_names_over_255_bytes_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="routing key 'ééé.*256 UTF-8 bytes, over AMQP's 255"):
        publish_method_frame(1, "x", "é" * 128)


@FAST
@given(st.integers(1, 65535), tags, st.booleans(), st.booleans())
def test_ack_nack_reject_frames_are_pamqps(
    channel: int, tag: int, multiple: bool, requeue: bool
) -> None:
    def marshal(method: Any) -> bytes:
        return pamqp_frame.marshal(method, channel)

    assert basic_ack_frame(channel, tag, multiple=multiple) == marshal(
        spec.Basic.Ack(tag, multiple)
    )
    assert basic_nack_frame(channel, tag, multiple=multiple, requeue=requeue) == marshal(
        spec.Basic.Nack(tag, multiple, requeue)
    )
    assert basic_reject_frame(channel, tag, requeue=requeue) == marshal(
        spec.Basic.Reject(tag, requeue)
    )


BODY_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 5 * CHUNK - 3]


@pytest.mark.parametrize("size", BODY_SIZES)
def test_content_frames_are_pamqps_and_none_exceeds_frame_max(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = content_frames(3, body, encode_properties(PROPS), FRAME_MAX)
    assert data == pamqp_content(3, body, PROPS, FRAME_MAX)
    frames = unmarshal_all(data)
    assert len(frames) == 1 + -(-size // CHUNK)  # the header, then ceil(size / chunk) bodies
    header = frames[0][1]
    assert header.body_size == size
    assert header.properties == pamqp_properties(PROPS)
    assert b"".join(frame.value for _, frame in frames[1:]) == body
    pos = 0
    while pos < len(data):
        size_field = struct.unpack_from(">I", data, pos + 3)[0]
        assert size_field + 8 <= FRAME_MAX
        pos += size_field + 8


@FAST
@given(st.binary(max_size=4 * FRAME_MAX), st.integers(FRAME_MAX, 3 * FRAME_MAX))
def test_content_frames_for_any_body_and_frame_max(body: bytes, frame_max: int) -> None:
    props = encode_properties(PROPS)
    data = content_frames(1, body, props, frame_max)
    assert data == pamqp_content(1, body, PROPS, frame_max)
    method = publish_method_frame(1, "ex", "key")
    assert publish_frames(method, 1, body, props, frame_max) == method + data


def test_no_frame_max_sends_one_body_frame() -> None:
    body = b"x" * 100_000
    frames = unmarshal_all(content_frames(1, body, encode_properties(PROPS), 0))
    assert [frame.value for _, frame in frames[1:]] == [body]


def test_a_header_frame_over_frame_max_is_refused_naming_the_sizes() -> None:
    props = encode_properties(Properties(headers={"big": "x" * 5000}))
    with pytest.raises(ValueError, match=rf"header frame of {len(props) + 20} bytes .* 4096"):
        content_frames(1, b"body", props, FRAME_MAX)


# -- frames we read -------------------------------------------------------------------------------

messages = st.tuples(
    st.integers(1, 3),  # channel
    st.sampled_from(["deliver", "return", "getok"]),
    st.binary(max_size=3 * CHUNK).map(lambda data: data[: len(data) // 2 * 2]),
    shortstrs,
    tags,
)
# Not on a message's channel: a method there between a message's frames breaks the protocol.
singles = st.tuples(
    st.sampled_from([0, 4, 5]), st.sampled_from(["ack", "nack", "heartbeat", "flow"]), tags
)


def message_props(name: str) -> Properties:
    # pamqp leaves an empty message_id out: it is read back as None.
    return Properties(headers={"name": name}, message_id=name or None, delivery_mode=2)


def message_frames(kind: str, channel: int, body: bytes, name: str, tag: int) -> list[bytes]:
    """A content-carrying method and its content, frame by frame, written by pamqp."""
    method: Any
    if kind == "deliver":
        method = spec.Basic.Deliver(f"ctag-{name}", tag, tag % 2 == 1, "ex", name)
    elif kind == "return":
        method = spec.Basic.Return(312, "NO_ROUTE", "ex", name)
    else:
        method = spec.Basic.GetOk(tag, False, "ex", name, 0)
    content = pamqp_content(channel, body, message_props(name), FRAME_MAX)
    frames = [pamqp_frame.marshal(method, channel)]
    pos = 0
    while pos < len(content):
        end = pos + 8 + struct.unpack_from(">I", content, pos + 3)[0]
        frames.append(content[pos:end])
        pos = end
    return frames


def expected_records(kind: str, channel: int, body: bytes, name: str, tag: int) -> list[Any]:
    props = message_props(name)
    if kind == "deliver":
        return [Delivered(channel, f"ctag-{name}", tag, tag % 2 == 1, "ex", name, props, body)]
    if kind == "return":
        return [Returned(channel, 312, "NO_ROUTE", "ex", name, props, body)]
    frames = message_frames(kind, channel, body, name, tag)
    return [RawFrame(frame[0], channel, frame) for frame in frames]


def single(channel: int, kind: str, tag: int) -> tuple[bytes, Any]:
    if kind == "heartbeat":
        data = pamqp_heartbeat.Heartbeat.marshal()
        return data, RawFrame(8, 0, data)
    if kind == "flow":
        data = pamqp_frame.marshal(spec.Channel.Flow(active=True), channel)
        return data, RawFrame(1, channel, data)
    method = spec.Basic.Ack(tag, True) if kind == "ack" else spec.Basic.Nack(tag, False)
    return pamqp_frame.marshal(method, channel), Confirm(channel, tag, kind == "ack", kind == "ack")


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """Messages on up to three channels, their frames interleaved across channels (as the spec
    allows), with confirms, heartbeats and other methods between; and the records expected."""
    queues: dict[int, list[tuple[bytes, list[Any]]]] = {}
    for channel, kind, body, name, tag in draw(st.lists(messages, max_size=5)):
        frames = message_frames(kind, channel, body, name, tag)
        records = expected_records(kind, channel, body, name, tag)
        if kind == "getok":  # raw: one record a frame
            queues.setdefault(channel, []).extend(zip(frames, ([r] for r in records), strict=True))
        else:  # the record comes with the last frame
            steps: list[tuple[bytes, list[Any]]] = [(frame, []) for frame in frames[:-1]]
            queues.setdefault(channel, []).extend([*steps, (frames[-1], records)])
    for channel, kind, tag in draw(st.lists(singles, max_size=6)):
        data, record = single(channel, kind, tag)
        queue = queues.setdefault(-1 - len(queues), [])  # its own queue: may go anywhere
        queue.append((data, [record]))
    stream, expected = [], []
    while queues:
        key = draw(st.sampled_from(sorted(queues)))
        data, records = queues[key].pop(0)
        stream.append(data)
        expected += records
        if not queues[key]:
            del queues[key]
    return b"".join(stream), expected


@settings(FAST, max_examples=150)
@given(streams(), st.data())
def test_a_stream_cut_anywhere_reads_as_the_records_sent(
    stream: tuple[bytes, list[Any]], data: st.DataObject
) -> None:
    wire, expected = stream
    assert read_all(wire) == expected
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    assert read_all(wire, cuts=cuts) == expected


def sample_stream() -> tuple[bytes, list[Any]]:
    parts: list[tuple[bytes, list[Any]]] = []
    for kind, channel, body in [("deliver", 1, b"hello"), ("return", 2, b""), ("getok", 1, b"x")]:
        frames = message_frames(kind, channel, body, "key", 9)
        parts.append((b"".join(frames), expected_records(kind, channel, body, "key", 9)))
    singles = [single(1, "ack", 4), single(0, "heartbeat", 0), single(2, "nack", 5)]
    parts += [(data, [record]) for data, record in singles]
    return b"".join(data for data, _ in parts), [r for _, records in parts for r in records]


def test_a_stream_cut_at_every_offset_reads_the_same() -> None:
    wire, expected = sample_stream()
    for cut in range(len(wire) + 1):
        assert read_all(wire, cuts=[cut]) == expected, cut
    assert read_all(wire, cuts=list(range(len(wire)))) == expected  # one byte at a time


def test_raw_frames_are_whole_frames_for_pamqp() -> None:
    wire, _ = sample_stream()
    raws = [record for record in read_all(wire) if isinstance(record, RawFrame)]
    kinds = [type(pamqp_frame.unmarshal(raw.frame)[2]).__name__ for raw in raws]
    assert kinds == ["GetOk", "ContentHeader", "ContentBody", "Heartbeat"]
    assert raws[0].payload == raws[0].frame[7:-1]


UTF8_NAMES = ["événements".encode(), "clé.routage".encode()]


def test_delivered_values_are_pamqps() -> None:
    props = PROPS
    body = b"b" * (2 * CHUNK + 5)
    # pamqp refuses to write this exchange name, but reads it: the frame is written by hand.
    names = b"".join(bytes([len(name)]) + name for name in [b"ctag", *UTF8_NAMES])
    args = names[:5] + struct.pack(">QB", 2**63 - 1, 1) + names[5:]
    method = struct.pack(">BHIHH", 1, 5, 4 + len(args), 60, 60) + args + b"\xce"
    deliver = pamqp_frame.unmarshal(method)[2]
    assert isinstance(deliver, spec.Basic.Deliver)
    assert (deliver.exchange, deliver.routing_key) == ("événements", "clé.routage")
    wire = method + pamqp_content(5, body, props, FRAME_MAX)
    [record] = read_all(wire)
    assert record == Delivered(5, "ctag", 2**63 - 1, True, "événements", "clé.routage", props, body)
    assert type(record.body) is bytes


def test_delivery_tags_are_unsigned_64_bits() -> None:
    # pamqp reads (and writes) delivery tags as signed; the spec's longlong is unsigned.
    ack = basic_ack_frame(1, 2**64 - 1)
    assert read_all(ack) == [Confirm(1, 2**64 - 1, False, True)]


def test_an_empty_body_completes_at_the_content_header() -> None:
    wire = b"".join(message_frames("deliver", 1, b"", "k", 1))
    reader = FrameReader(FRAME_MAX)
    header_end = len(wire)
    assert [type(r) for r in reader.feed(wire[:header_end])] == [Delivered]


# -- malformed streams ----------------------------------------------------------------------------

DELIVER = pamqp_frame.marshal(spec.Basic.Deliver("c", 1, False, "ex", "rk"), 1)
HEADER = pamqp_frame.marshal(pamqp_header.ContentHeader(0, 4, spec.Basic.Properties()), 1)
BODY = pamqp_frame.marshal(pamqp_body.ContentBody(b"four"), 1)
HEARTBEAT = pamqp_heartbeat.Heartbeat.marshal()


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (DELIVER[:-1] + b"\x00", "ends in 0x00, not the frame-end octet 0xce"),
        (b"\x03\x00\x01\x00\x00\x10\x00", "4104 bytes, over frame_max 4096"),  # header only
        (HEADER, "content header frame on channel 1, which expects no content"),
        (BODY, "content body frame on channel 1, which expects no content"),
        (DELIVER + BODY, "which had no content header yet"),
        (DELIVER + HEADER + HEADER, "which had its content header"),
        (DELIVER + HEADER + pamqp_frame.marshal(pamqp_body.ContentBody(b"fives"), 1), "5 bytes"),
        (DELIVER + basic_ack_frame(1, 1), "while its content was still expected"),
        (b"\x04\x00\x01\x00\x00\x00\x00\xce", "unknown frame type 4"),
        (b"\x01\x00\x01\x00\x00\x00\x02\x00\x3c\xce", "method frame on channel 1 of 2 bytes"),
        (b"\x01\x00\x01\x00\x00\x00\x06\x00\x3c\x00\x3c\x05a\xce", "malformed frame of type 1"),
        (b"\x01\x00\x01\x00\x00\x00\x05\x00\x3c\x00\x50\x00\xce" + HEARTBEAT, "8 bytes too short"),
        (b"AMQP\x00\x00\x09\x01", "protocol header"),
        (DELIVER + b"\x02\x00\x01\x00\x00\x00\x0e\x00\x28" + bytes(12) + b"\xce", "class 40"),
    ],
)
def test_malformed_streams_raise_frame_error_naming_the_fault(wire: bytes, words: str) -> None:
    with pytest.raises(FrameError, match=words):
        FrameReader(FRAME_MAX).feed(wire)


def test_a_body_longer_than_announced_names_both_sizes() -> None:
    wire = DELIVER + HEADER + pamqp_frame.marshal(pamqp_body.ContentBody(b"fives"), 1)
    with pytest.raises(FrameError, match="reaches 5 bytes, over the 4 its content header"):
        FrameReader(FRAME_MAX).feed(wire)
