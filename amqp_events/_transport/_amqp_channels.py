"""One aio-pika connection and the aiormq channels on it, with aiormq's errors as ours.

The base of ``AmqpSession``: it knows whether the connection is alive, opens channels on it,
closes it, and turns aiormq's exceptions into amqp-events' (a refusal is a ``BrokerError``, a dead
link a ``BrokerConnectionError``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractConnection

from .._errors import BrokerConnectionError, BrokerError
from .._url import redact
from ._lean_link import LeanLink
from ._wire import UNLIMITED_FRAME_MAX

__all__ = ["GONE", "AmqpChannels", "broker_error", "refusal"]

log = logging.getLogger(__name__)

_CHANNEL_ERROR_CODES: dict[type[BaseException], int] = {
    aiormq.exceptions.ChannelPreconditionFailed: BrokerError.PRECONDITION_FAILED,
    aiormq.exceptions.ChannelNotFoundEntity: BrokerError.NOT_FOUND,
    aiormq.exceptions.ChannelLockedResource: BrokerError.RESOURCE_LOCKED,
    aiormq.exceptions.ChannelAccessRefused: BrokerError.ACCESS_REFUSED,
}

# What a dead connection or channel raises in aiormq.
GONE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


def refusal(exc: aiormq.exceptions.AMQPChannelError) -> tuple[int, str]:
    """The reply code and the broker's own text of an aiormq channel error."""
    code = _CHANNEL_ERROR_CODES.get(type(exc))
    args = exc.args
    if code is None:
        code = args[0] if args and isinstance(args[0], int) else 0
        args = args[1:]
    return code, " ".join(str(a) for a in args) or type(exc).__name__


def broker_error(exc: aiormq.exceptions.AMQPChannelError, doing: str) -> BrokerError:
    """Our BrokerError for an aiormq channel error, keeping the broker's own text."""
    code, text = refusal(exc)
    return BrokerError(code, f"{doing}: {text}")


def _negotiated_frame_max(connection: AbstractConnection) -> int:
    """The frame_max agreed in this connection's tune (aiormq accepts the broker's offer)."""
    underlay = connection.transport
    tune = getattr(underlay.connection, "connection_tune", None) if underlay else None
    frame_max = getattr(tune, "frame_max", None)
    if not isinstance(frame_max, int):
        raise BrokerConnectionError(
            "cannot read frame_max from the connection's tune: is it open? (aiormq changed?)"
        )
    return frame_max or UNLIMITED_FRAME_MAX  # 0: no limit but the 32-bit frame size


class AmqpChannels:
    """One connection to RabbitMQ: whether it lives, channels on it, its errors as ours."""

    def __init__(self, connection: AbstractConnection, url: str, link: LeanLink) -> None:
        self._connection = connection
        self._url = url
        self._closing = False
        self._lost = False  # aio-pika's is_closed stays False when the broker closed us
        self._frame_max = _negotiated_frame_max(connection)
        self._link = link  # the hot path: publishes, confirms, deliveries and acks
        link.set_frame_max(self._frame_max)

    @property
    def is_open(self) -> bool:
        return not (self._closing or self._lost or self._connection.is_closed)

    @property
    def frame_max(self) -> int:
        return self._frame_max

    @property
    def _dead(self) -> bool:
        return self._lost or self._connection.is_closed

    async def _channel(self, *, confirms: bool) -> aiormq.abc.AbstractChannel:
        try:
            channel = await self._connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )
        except RuntimeError as exc:
            # aiormq's word for "this connection is closed", before aio-pika's close callback
            # has told us so.
            self._lost = True
            raise BrokerConnectionError(
                f"opening a channel on {redact(self._url)}: {exc}"
            ) from None
        return await channel.get_underlay_channel()

    def _gone(self, doing: str, exc: BaseException) -> BrokerConnectionError:
        return BrokerConnectionError(f"{doing} on {redact(self._url)}: connection lost ({exc!r})")

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """aiormq's errors as ours: a refusal is a BrokerError, a dead link a connection error."""
        try:
            yield
        except aiormq.exceptions.AMQPChannelError as exc:
            raise (self._gone(doing, exc) if self._dead else broker_error(exc, doing)) from None
        except GONE as exc:
            raise self._gone(doing, exc) from None

    @asynccontextmanager
    async def _own_channel(self, doing: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        # A refusal closes its channel: one of its own keeps the publish and consume channels
        # alive through a PRECONDITION_FAILED or NOT_FOUND.
        with self._translated(doing):
            channel = await self._channel(confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def close(self) -> None:
        self._closing = True
        if not self._dead:
            try:
                await self._connection.close()
            except (aiormq.exceptions.AMQPError, *GONE) as exc:
                log.debug("closing %r: %r", self, exc)
