"""The AMQP 0-9-1 frames of the hot path, encoded and decoded by hand (issue #18).

Publishing builds its frames from parts computed once (the Basic.Publish method frame per
exchange and key, the constant properties per publisher) and encodes only each message's own
values. Reading parses a byte stream in whatever chunks it arrives: deliveries, returns and
confirms become records without pamqp objects; every other frame is handed back whole, for
``pamqp.frame.unmarshal``. Bytes and values are pamqp's (``_frame_tables`` says where pamqp's
choices are not the spec's): a peer cannot tell which codec wrote a frame.

No I/O here: bytes in, bytes or records out.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass
from typing import Final, NamedTuple

from ._frame_tables import (
    FrameError,
    Properties,
    PropertiesTemplate,
    decode_properties,
    encode_properties,
)

__all__ = [
    "FRAME_END",
    "Confirm",
    "Delivered",
    "FrameError",
    "FrameReader",
    "Properties",
    "PropertiesTemplate",
    "RawFrame",
    "Record",
    "Returned",
    "append_content_frames",
    "basic_ack_frame",
    "basic_nack_frame",
    "basic_reject_frame",
    "content_frames",
    "decode_properties",
    "encode_properties",
    "publish_frames",
    "publish_method_frame",
]

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
_END: Final = b"\xce"
_BASIC: Final = 60
# A frame's size field is 32 bits: with frame_max 0 ("no limit") that is the limit.
_MAX_PAYLOAD: Final = 0xFFFFFFFF
_HEADER_PREFIX: Final = 12  # class id, weight, body size

_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_HEAD = struct.Struct(">BHIHH")
_CONTENT_HEAD = struct.Struct(">BHIHHQ")  # the header frame's head: weight 0, body size
_BODY_HEAD = struct.Struct(">BBHI")  # the previous frame's end octet, then a body frame's head
_TAG_FRAME = struct.Struct(">BHIHHQBB")  # ack, nack, reject: a tag and one octet of bits
_CLASS_METHOD = struct.Struct(">HH")
_TAG_BITS = struct.Struct(">QB")
_HEADER_FIELDS = struct.Struct(">HHQ")
_U16 = struct.Struct(">H")

Buffer = bytes | bytearray | memoryview


# -- frames we send -------------------------------------------------------------------------------


def publish_method_frame(
    channel: int, exchange: str, routing_key: str, *, mandatory: bool = False
) -> bytes:
    """The whole Basic.Publish method frame (immediate unset), to compute once and reuse."""
    args = b"".join(
        (b"\x00\x00", _name(exchange, "exchange"), _name(routing_key, "routing key"))
    ) + (b"\x01" if mandatory else b"\x00")
    return _METHOD_HEAD.pack(FRAME_METHOD, channel, 4 + len(args), _BASIC, 40) + args + _END


def _name(value: str, what: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"{what} {value[:40]!r}... is {len(data)} UTF-8 bytes, over AMQP's 255")
    return bytes((len(data),)) + data


def basic_ack_frame(channel: int, delivery_tag: int, *, multiple: bool = False) -> bytes:
    """A Basic.Ack method frame."""
    return _TAG_FRAME.pack(FRAME_METHOD, channel, 13, _BASIC, 80, delivery_tag, multiple, 0xCE)


def basic_nack_frame(
    channel: int, delivery_tag: int, *, multiple: bool = False, requeue: bool = True
) -> bytes:
    """A Basic.Nack method frame."""
    bits = multiple | requeue << 1
    return _TAG_FRAME.pack(FRAME_METHOD, channel, 13, _BASIC, 120, delivery_tag, bits, 0xCE)


def basic_reject_frame(channel: int, delivery_tag: int, *, requeue: bool = True) -> bytes:
    """A Basic.Reject method frame."""
    return _TAG_FRAME.pack(FRAME_METHOD, channel, 13, _BASIC, 90, delivery_tag, requeue, 0xCE)


def append_content_frames(
    out: list[Buffer], channel: int, body: Buffer, properties: bytes, frame_max: int
) -> None:
    """Append to ``out`` the content header frame and the body frames of a message, none over
    ``frame_max`` (0: no limit); the body is not copied, a long one is sliced in views.

    Raises ValueError when the header frame alone exceeds ``frame_max``: it cannot be split,
    and the broker would close the connection.
    """
    size = len(body)
    payload = _HEADER_PREFIX + len(properties)
    chunk = frame_max - 8 if frame_max else _MAX_PAYLOAD
    if payload > chunk:
        raise ValueError(
            f"content header frame of {payload + 8} bytes (its properties and headers take "
            f"{len(properties)}) exceeds frame_max {frame_max}"
        )
    out.append(_CONTENT_HEAD.pack(FRAME_HEADER, channel, payload, _BASIC, 0, size))
    out.append(properties)
    if size <= chunk:
        if size:
            out += (_BODY_HEAD.pack(FRAME_END, FRAME_BODY, channel, size), body)
        out.append(_END)
        return
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        out += (_BODY_HEAD.pack(FRAME_END, FRAME_BODY, channel, len(piece)), piece)
    out.append(_END)


def content_frames(channel: int, body: Buffer, properties: bytes, frame_max: int) -> bytes:
    """The content header frame and body frames of a message, as one bytes."""
    out: list[Buffer] = []
    append_content_frames(out, channel, body, properties, frame_max)
    return b"".join(out)


def publish_frames(
    method_frame: bytes, channel: int, body: Buffer, properties: bytes, frame_max: int
) -> bytes:
    """A whole publish, one write: ``method_frame`` (``publish_method_frame``), then content."""
    out: list[Buffer] = [method_frame]
    append_content_frames(out, channel, body, properties, frame_max)
    return b"".join(out)


# -- frames we read -------------------------------------------------------------------------------


@dataclass(slots=True)
class Delivered:
    """A Basic.Deliver with its content."""

    channel: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes


@dataclass(slots=True)
class Returned:
    """A Basic.Return (an unroutable mandatory publish) with its content."""

    channel: int
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes


class Confirm(NamedTuple):
    """A publisher confirm: Basic.Ack (``ack``) or Basic.Nack from the broker."""

    channel: int
    delivery_tag: int
    multiple: bool
    ack: bool


class RawFrame(NamedTuple):
    """Any other frame, whole as it came (``frame``), for ``pamqp.frame.unmarshal``."""

    frame_type: int
    channel: int
    frame: bytes

    @property
    def payload(self) -> bytes:
        return self.frame[7:-1]


Record = Delivered | Returned | Confirm | RawFrame
_NO_PROPERTIES: Final = Properties()


class _Content:
    """A channel's content in progress: after its method, until its body is complete."""

    __slots__ = ("parts", "received", "record", "size")

    def __init__(self, record: Delivered | Returned | None) -> None:
        self.record = record  # None: a method handed back raw (Basic.GetOk), content too
        self.size = -1  # the body size, once the content header came
        self.received = 0
        self.parts: list[bytes] = []


class FrameReader:
    """Frames from a byte stream fed in any chunks, as records (``Record``)."""

    __slots__ = ("_buffer", "_max_payload", "_need", "_pending", "frame_max", "hot")

    def __init__(self, frame_max: int = 0, hot: Container[int] | None = None) -> None:
        # The channels whose frames become records; any other channel's come back raw, whole
        # (None: every channel's).
        self.hot = hot
        self.set_frame_max(frame_max)
        self._buffer = bytearray()  # an incomplete frame's bytes
        self._need = 7  # bytes the buffer needs before a frame may be complete
        self._pending: dict[int, _Content] = {}

    def set_frame_max(self, frame_max: int) -> None:
        """The negotiated frame_max (0: no limit), also once the reader has started."""
        self.frame_max = frame_max
        self._max_payload = frame_max - 8 if frame_max else _MAX_PAYLOAD

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Record]:
        """The records that ``data`` completes, in order. Raises FrameError."""
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                self._need = self._needed(buffer)
                if len(buffer) < self._need:
                    return []  # a long frame grows here, copied once
            data = bytes(buffer)
            buffer.clear()
        out: list[Record] = []
        pos = self._parse(data, out)
        if pos < len(data):
            buffer += memoryview(data)[pos:]
            self._need = self._needed(buffer)
        return out

    def _needed(self, buffer: bytearray) -> int:
        if len(buffer) < 7:
            return 7
        frame_type, channel, size = _FRAME_HEAD.unpack_from(buffer)
        self._check_size(frame_type, channel, size, buffer)
        return int(size) + 8

    def _check_size(self, frame_type: int, channel: int, size: int, data: Buffer) -> None:
        if size > self._max_payload:
            if bytes(data[:4]) == b"AMQP":
                raise FrameError("the broker answered with a protocol header: wrong AMQP version")
            raise FrameError(
                f"frame of type {frame_type} on channel {channel} is {size + 8} bytes, over "
                f"frame_max {self.frame_max}"
            )

    def _parse(self, data: bytes, out: list[Record]) -> int:
        pos, end = 0, len(data)
        while end - pos >= 7:
            frame_type, channel, size = _FRAME_HEAD.unpack_from(data, pos)
            if size > self._max_payload:
                self._check_size(frame_type, channel, size, data[pos : pos + 4])
            start = pos + 7
            stop = start + size  # the frame-end octet
            if stop >= end:
                break
            if data[stop] != FRAME_END:
                raise FrameError(
                    f"frame of type {frame_type} on channel {channel} ends in "
                    f"{data[stop]:#04x}, not the frame-end octet 0xce: the stream is corrupt"
                )
            hot = self.hot
            if hot is not None and channel not in hot:
                out.append(RawFrame(frame_type, channel, data[pos : stop + 1]))
                pos = stop + 1
                continue
            try:
                if frame_type == FRAME_BODY:
                    self._body(data, pos, stop, channel, out)
                elif frame_type == FRAME_METHOD:
                    self._method(data, pos, stop, channel, out)
                elif frame_type == FRAME_HEADER:
                    self._header(data, pos, stop, channel, out)
                elif frame_type == FRAME_HEARTBEAT:
                    out.append(RawFrame(frame_type, channel, data[pos : stop + 1]))
                else:
                    raise FrameError(f"unknown frame type {frame_type} on channel {channel}")
            except (IndexError, struct.error, UnicodeDecodeError) as exc:
                raise FrameError(
                    f"malformed frame of type {frame_type} on channel {channel}: {exc}"
                ) from exc
            pos = stop + 1
        return pos

    def _method(self, data: bytes, pos: int, stop: int, channel: int, out: list[Record]) -> None:
        if channel in self._pending:
            raise FrameError(
                f"method frame on channel {channel} while its content was still expected"
            )
        start = pos + 7
        if stop - start < 4:
            raise FrameError(f"method frame on channel {channel} of {stop - start} bytes")
        class_id, method_id = _CLASS_METHOD.unpack_from(data, start)
        p = start + 4
        if class_id != _BASIC:
            out.append(RawFrame(FRAME_METHOD, channel, data[pos : stop + 1]))
            return
        if method_id == 60:  # Deliver
            size = data[p]
            consumer_tag = data[p + 1 : p + 1 + size].decode("utf-8")
            p += 1 + size
            tag, bits = _TAG_BITS.unpack_from(data, p)
            exchange, routing_key, p = _two_names(data, p + 9)
            record: Delivered | Returned = Delivered(
                channel, consumer_tag, tag, bool(bits & 1), exchange, routing_key,
                _NO_PROPERTIES, b"",
            )  # fmt: skip
        elif method_id == 80 or method_id == 120:  # Ack, Nack
            tag, bits = _TAG_BITS.unpack_from(data, p)
            _check_end(p + 9, stop, channel)
            out.append(Confirm(channel, tag, bool(bits & 1), method_id == 80))
            return
        elif method_id == 50:  # Return
            code = _U16.unpack_from(data, p)[0]
            size = data[p + 2]
            text = data[p + 3 : p + 3 + size].decode("utf-8")
            exchange, routing_key, p = _two_names(data, p + 3 + size)
            record = Returned(channel, code, text, exchange, routing_key, _NO_PROPERTIES, b"")
        else:
            out.append(RawFrame(FRAME_METHOD, channel, data[pos : stop + 1]))
            if method_id == 71:  # GetOk: its content follows, handed back raw too
                self._pending[channel] = _Content(None)
            return
        _check_end(p, stop, channel)
        self._pending[channel] = _Content(record)

    def _header(self, data: bytes, pos: int, stop: int, channel: int, out: list[Record]) -> None:
        content = self._pending.get(channel)
        if content is None or content.size >= 0:
            what = "expects no content" if content is None else "had its content header"
            raise FrameError(f"content header frame on channel {channel}, which {what}")
        start = pos + 7
        if stop - start < 14:
            raise FrameError(f"content header frame on channel {channel} of {stop - start} bytes")
        class_id, _weight, size = _HEADER_FIELDS.unpack_from(data, start)
        if class_id != _BASIC:
            raise FrameError(f"content header of class {class_id} on channel {channel}, not 60")
        content.size = size
        record = content.record
        if record is None:
            out.append(RawFrame(FRAME_HEADER, channel, data[pos : stop + 1]))
        else:
            record.properties = decode_properties(data, start + _HEADER_PREFIX, stop)
        if size == 0:
            del self._pending[channel]
            if record is not None:
                out.append(record)

    def _body(self, data: bytes, pos: int, stop: int, channel: int, out: list[Record]) -> None:
        content = self._pending.get(channel)
        if content is None or content.size < 0:
            what = "expects no content" if content is None else "had no content header yet"
            raise FrameError(f"content body frame on channel {channel}, which {what}")
        received = content.received + stop - pos - 7
        if received > content.size:
            raise FrameError(
                f"content body on channel {channel} reaches {received} bytes, over the "
                f"{content.size} its content header announced"
            )
        content.received = received
        record = content.record
        if record is None:
            out.append(RawFrame(FRAME_BODY, channel, data[pos : stop + 1]))
        elif received == content.size and not content.parts:
            record.body = data[pos + 7 : stop]  # the usual single body frame: one copy
        else:
            content.parts.append(data[pos + 7 : stop])
            if received == content.size:
                record.body = b"".join(content.parts)
        if received == content.size:
            del self._pending[channel]
            if record is not None:
                out.append(record)


def _two_names(data: bytes, p: int) -> tuple[str, str, int]:
    """Exchange and routing key shortstrs from ``p``, and the offset after them."""
    size = data[p]
    exchange = data[p + 1 : p + 1 + size].decode("utf-8")
    p += 1 + size
    size = data[p]
    return exchange, data[p + 1 : p + 1 + size].decode("utf-8"), p + 1 + size


def _check_end(p: int, stop: int, channel: int) -> None:
    if p > stop:
        raise FrameError(f"method frame on channel {channel} is {p - stop} bytes too short")
