"""The hot path's I/O on an aiormq connection (issue #18): frames read and written by hand.

aiormq reads every frame with three awaits, unmarshals it with pamqp and queues it for a task
per channel, and writes every frame through a queue and a task of its own. For the frames that
come and go once per message (publish, confirm, deliver, ack) that costs more than everything
else a message does. So aiormq's connection is opened with a transport of ours
(``LeanTransportFactory``, aiormq's own hook): its reader splits each chunk the socket gives
into frames as it arrives (``LeanLink.received``). The frames of a *hot* channel (one whose
publishes or deliveries we handle, registered with ``LeanLink.register``) are handled right
there; every other frame is fed on to aiormq, whole and in order, so negotiation, heartbeats,
channel opening and closing, declarations and consumer set-up stay aiormq's.

Writes of hot frames collect in a buffer written once per event-loop turn (``LeanLink.write``),
one ``send`` for many messages. Two rules keep this safe beside aiormq's own writer:

- a hot channel's frames are ours alone: nothing publishes, acks or rejects on it through aiormq;
- when the broker closes a hot channel, it is unregistered before aiormq sees the Close, so no
  frame of ours follows aiormq's Close-Ok (the broker would close the whole connection).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any, Final, Protocol

import aiormq
import aiormq.connection
from yarl import URL

from ._frames import Confirm, Delivered, FrameError, FrameReader, RawFrame, Returned

__all__ = ["ChannelClosedByBroker", "HotChannel", "LeanLink", "LeanTransportFactory"]

log = logging.getLogger(__name__)

_HEARTBEAT: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_CLOSE: Final = struct.Struct(">HHHB")  # class, method, reply code, reply text length
# Bytes waiting in the socket's buffer above which writers wait for it to drain.
WRITE_BUFFER_LIMIT: Final = 4 * 1024 * 1024
# Bytes buffered in one loop turn after which they are written at once: the broker starts on
# the first messages of a long burst while the rest are still being made.
FLUSH_AT: Final = 16 * 1024


class HotChannel(Protocol):
    """A channel whose per-message frames the link hands over, parsed."""

    def received(self, record: Delivered | Returned | Confirm) -> None:
        """A delivery, a return or a confirm on this channel."""

    def closed(self, exc: BaseException) -> None:
        """The channel or its connection is gone: fail what waits, write nothing more."""


class ChannelClosedByBroker(Exception):
    """The broker closed a hot channel (Channel.Close): its reply code and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class LeanLink:
    """One connection's hot path: the frame reader, the hot channels, the write buffer."""

    def __init__(self) -> None:
        self._hot: dict[int, HotChannel] = {}
        self._frames = FrameReader(hot=self._hot)
        self._out: list[Any] = []
        self._out_bytes = 0
        self._flush_due = False
        self._forward: Callable[[bytes], None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_forward = 0.0
        self._lost: BaseException | None = None

    # -- set up by the transport factory -----------------------------------------------------

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        forward: Callable[[bytes], None],
        writer: asyncio.StreamWriter,
    ) -> None:
        self._loop = loop
        self._forward = forward
        self._writer = writer
        self._last_forward = loop.time()

    def set_frame_max(self, frame_max: int) -> None:
        self._frames.set_frame_max(frame_max)

    # -- hot channels ------------------------------------------------------------------------

    def register(self, channel: int, handler: HotChannel) -> None:
        """Hand ``channel``'s per-message frames to ``handler`` from now on; before the method
        that starts them (Basic.Consume) goes out: its answers may share a read with them."""
        self._hot[channel] = handler

    def unregister(self, channel: int, handler: HotChannel | None, exc: BaseException) -> None:
        """Stop handing ``channel``'s frames over (to ``handler`` only, if given: a number is
        reused once aiormq closed its channel); the handler fails what waits with ``exc``."""
        registered = self._hot.get(channel)
        if registered is None or (handler is not None and registered is not handler):
            return
        del self._hot[channel]
        registered.closed(exc)

    def lost(self, exc: BaseException) -> None:
        """The connection is gone: every hot channel fails what waits on it."""
        if self._lost is None:
            self._lost = exc
        for channel in list(self._hot):
            self.unregister(channel, None, exc)
        self._out.clear()
        self._out_bytes = 0

    @property
    def is_lost(self) -> bool:
        return self._lost is not None

    # -- writing -----------------------------------------------------------------------------

    def write(self, frames: bytes) -> None:
        """Send ``frames`` (whole frames) with the others of this loop turn, in one write."""
        self._out.append(frames)
        self._out_bytes += len(frames)
        self._written()

    def write_parts(self, parts: list[Any]) -> None:
        """As ``write``, for frames in several buffers (a publish: method, header, body)."""
        self._out += parts
        for part in parts:
            self._out_bytes += len(part)
        self._written()

    def _written(self) -> None:
        if self._out_bytes >= FLUSH_AT:
            self.flush()
        elif not self._flush_due:
            self._flush_due = True
            assert self._loop is not None
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is buffered now: before an aiormq call whose frame must come after it
        (the no-op RPC that confirms an ack was processed)."""
        self._flush_due = False
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            return  # the connection is going: its loss fails what waits (lost())
        writer.transport.write(b"".join(out))

    @property
    def congested(self) -> bool:
        writer = self._writer
        return writer is not None and (
            writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT
        )

    async def drain(self) -> None:
        """Wait until the socket's buffer is below its high-water mark."""
        writer = self._writer
        if writer is not None and not writer.transport.is_closing():
            await writer.drain()

    # -- reading -----------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        """A chunk from the socket: hot frames handled here, the rest fed on to aiormq."""
        forward = self._forward
        assert forward is not None
        try:
            records = self._frames.feed(data)
        except FrameError as exc:
            log.error("closing the connection: %s", exc)
            self.lost(aiormq.exceptions.AMQPConnectionError(f"malformed frames: {exc}"))
            assert self._writer is not None
            self._writer.transport.abort()
            return
        hot = self._hot
        handled = False
        for record in records:
            if type(record) is RawFrame:
                if record.channel in hot:
                    self._hot_raw(record)
                forward(record.frame)
                continue
            handled = True
            handler = hot.get(record.channel)
            if handler is not None:
                handler.received(record)  # type: ignore[arg-type]
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if not handled:
            self._last_forward = now
        elif now - self._last_forward > 1.0:
            # aiormq counts a connection alive by the frames its reader sees; a stream of only
            # hot frames (confirms) would look dead to it. A heartbeat says it is not.
            self._last_forward = now
            forward(_HEARTBEAT)

    def _hot_raw(self, record: RawFrame) -> None:
        """A frame of a hot channel that is not ours to handle: a Channel.Close unregisters
        the channel now, before aiormq answers it."""
        frame = record.frame
        if record.frame_type != 1 or len(frame) < 14:
            return
        class_id, method_id, code, size = _CLOSE.unpack_from(frame, 7)
        if (class_id, method_id) != (20, 40):
            return
        text = bytes(frame[14 : 14 + size]).decode("utf-8", "replace")
        self.flush()  # frames before aiormq's Close-Ok: the broker discards them
        self.unregister(record.channel, None, ChannelClosedByBroker(code, text))


class _LeanReader(asyncio.StreamReader):
    """aiormq's reader, fed only what the link does not handle itself."""

    def __init__(self, link: LeanLink, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self._link = link

    def feed_data(self, data: Any) -> None:  # bytes, from StreamReaderProtocol
        self._link.received(data)

    def forward(self, data: bytes) -> None:
        super().feed_data(data)


class LeanTransportFactory(aiormq.connection.TransportFactory):
    """aiormq's transport hook: the socket opened as ``asyncio.open_connection`` would, with a
    reader that gives the link every chunk first."""

    def __init__(self, link: LeanLink) -> None:
        self.link = link

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider else None
        loop = asyncio.get_running_loop()
        reader = _LeanReader(self.link, loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host or "localhost", url.port or 5672, ssl=ssl, **kwargs
            )
        except OSError as exc:
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.link.attach(loop, reader.forward, writer)
        return reader, writer
