"""Publishing on RabbitMQ: one channel in confirm mode, each publish matched to its outcome.

The base of ``AmqpSession`` above ``AmqpChannels``. aiormq opens the channel (and puts it in
confirm mode); the publishes themselves go by hand (``_lean_publish``): frames from parts
encoded once, one write per event-loop turn, each confirm matched by its delivery tag. A
basic.return is matched to its publish by message_id, so publishes of one explicit message_id
go one at a time; a publish without one is given one, as aiormq did.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractConnection

from .._envelope import Envelope
from .._errors import BrokerConnectionError, PublishError, PublishOutcomeUnknown, Unroutable
from .._url import redact
from ._amqp_channels import GONE, AmqpChannels
from ._base import OutgoingProperties, PublishItem, publish_refused
from ._lean_link import ChannelClosedByBroker, LeanLink
from ._lean_publish import ConfirmingChannel, Nacked, ReturnedByBroker, properties_for
from ._wire import check_header_frame, unencodable_headers

# A publish with no confirm timeout waits as long as its connection lives.
_NO_TIMEOUT = 10.0 * 365 * 24 * 3600


def _closed(closing: asyncio.Future[Any]) -> BaseException:
    if closing.cancelled():
        return ConnectionError("channel closed")
    return closing.exception() or ConnectionError("channel closed")


__all__ = ["AmqpPublishing"]


class _IdTurn:
    """Publishes of one message_id, one at a time in arrival order."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class AmqpPublishing(AmqpChannels):
    """A connection's publish channel (confirms on), reopened after the broker closed it."""

    def __init__(self, connection: AbstractConnection, url: str, link: LeanLink) -> None:
        super().__init__(connection, url, link)
        self._hot: ConfirmingChannel | None = None
        self._publish_lock = asyncio.Lock()
        # The last headers object whose content header frame fit: Publisher.publish without
        # user headers passes the same dict every time, so checking it once is enough.
        self._fitting_headers: object = None
        # Explicit message ids with a publish in flight: aiormq matches a basic.return to its
        # publish by message_id, so a second publish of one id waits for the first's outcome.
        self._waiting_ids: dict[str, _IdTurn] = {}

    async def _publish_channel(self) -> ConfirmingChannel:
        """The hot publish channel; a new one when the broker closed the last."""
        hot = self._hot
        if hot is not None and hot.failure is None:
            return hot
        if self._dead:
            raise BrokerConnectionError(f"connection to {redact(self._url)} is closed")
        async with self._publish_lock:  # after a channel error, one task reopens it
            if self._hot is None or self._hot.failure is not None:
                try:
                    channel = await self._channel(confirms=True)
                except GONE as exc:
                    raise self._gone("reopening the publish channel", exc) from None
                self._hot = self._hot_channel(channel)
            return self._hot

    def _hot_channel(self, channel: aiormq.abc.AbstractChannel) -> ConfirmingChannel:
        hot = ConfirmingChannel(
            self._link, channel.number, self._frame_max, asyncio.get_running_loop()
        )
        self._link.register(channel.number, hot)

        def on_closed(closing: asyncio.Future[Any]) -> None:
            # Closed by aiormq (ours, or the connection's end) without a Close we saw first.
            self._link.unregister(channel.number, hot, self._gone("publishing", _closed(closing)))

        channel.closing.add_done_callback(on_closed)
        return hot

    async def _writable_channel(self) -> ConfirmingChannel:
        """The hot publish channel, once the socket's buffer has room."""
        hot = self._hot
        if hot is None or hot.failure is not None:
            hot = await self._publish_channel()
        if self._link.congested:
            await self._link.drain()
        return hot

    def _check_frame(
        self,
        exchange: str,
        routing_key: str,
        headers: Mapping[str, Any],
        properties: OutgoingProperties | None,
        envelope: Envelope | None,
    ) -> None:
        """``check_header_frame``, once per headers object when there are no properties
        (Publisher.publish without user headers passes the same dict every time)."""
        if properties is not None or headers is not self._fitting_headers:
            fits_any = check_header_frame(
                exchange, routing_key, headers, properties, self._frame_max, envelope
            )
            if fits_any and properties is None:
                self._fitting_headers = headers

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope | None = None,
    ) -> None:
        self._check_frame(exchange, routing_key, headers, properties, envelope)
        # An envelope's message id is new: no other publish of it can be in flight.
        message_id = properties.message_id if properties is not None else None
        turn = None
        if message_id and envelope is None:
            turn = await self._take_turn(message_id)
        try:
            # Enveloped events come here only when publish_now() could not write at once.
            hot = await self._writable_channel()
            confirmed = self._send(
                hot,
                exchange,
                routing_key,
                body,
                headers,
                properties,
                mandatory,
                confirm_timeout,
                envelope,
            )
            try:
                await confirmed
            except Exception as exc:
                raise self._failure(exc, exchange, routing_key, confirm_timeout) from None
        finally:
            if turn is not None and message_id:
                self._end_turn(message_id, turn)

    async def _take_turn(self, message_id: str) -> _IdTurn:
        """Wait until no other publish of ``message_id`` is in flight (a return is matched by
        it): ``_end_turn`` lets the next one go."""
        turn = self._waiting_ids.get(message_id)
        if turn is None:
            turn = self._waiting_ids[message_id] = _IdTurn()
        turn.users += 1
        try:
            await turn.lock.acquire()
        except BaseException:
            self._leave(message_id, turn)
            raise
        return turn

    def _end_turn(self, message_id: str, turn: _IdTurn) -> None:
        turn.lock.release()
        self._leave(message_id, turn)

    def _leave(self, message_id: str, turn: _IdTurn) -> None:
        turn.users -= 1
        if not turn.users:
            del self._waiting_ids[message_id]

    def publish_now(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope,
        waiter: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None] | None:
        hot = self._hot
        if hot is None or hot.failure is not None or self._link.congested:
            return None  # publish() reopens the channel, or waits for the socket to drain
        self._check_frame(exchange, routing_key, headers, None, envelope)
        return self._send(
            hot,
            exchange,
            routing_key,
            body,
            headers,
            None,
            mandatory,
            confirm_timeout,
            envelope,
            waiter,
        )

    def publish_failure(
        self, exc: Exception, exchange: str, routing_key: str, confirm_timeout: float | None
    ) -> Exception:
        return self._failure(exc, exchange, routing_key, confirm_timeout)

    async def publish_pipelined(
        self, items: Sequence[PublishItem], confirm_timeout: float | None
    ) -> list[BaseException | None]:
        """Publish ``items`` in one go: every frame written at once, then every confirm
        awaited, with no task per publish. Each one's outcome, as ``publish`` raises it."""
        try:
            hot = await self._writable_channel()
        except Exception as exc:
            return [exc] * len(items)
        outcomes: list[BaseException | None] = [None] * len(items)
        waiting: list[asyncio.Future[None]] = []
        sent: list[int] = []
        for n, item in enumerate(items):
            try:
                self._check_frame(
                    item.exchange, item.routing_key, item.headers, None, item.envelope
                )
                waiting.append(
                    self._send(
                        hot,
                        item.exchange,
                        item.routing_key,
                        item.body,
                        item.headers,
                        None,
                        item.mandatory,
                        confirm_timeout,
                        item.envelope,
                    )
                )
                sent.append(n)
            except Exception as exc:
                outcomes[n] = exc
        results = await asyncio.gather(*waiting, return_exceptions=True)
        for n, result in zip(sent, results, strict=True):
            if result is not None:
                if not isinstance(result, Exception):
                    raise result  # cancellation goes through
                item = items[n]
                outcomes[n] = self._failure(
                    result, item.exchange, item.routing_key, confirm_timeout
                )
        return outcomes

    def _send(
        self,
        hot: ConfirmingChannel,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope | None,
        waiter: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None]:
        """Encode and write one publish (with the others of this loop turn); its confirm
        settles the future (``waiter``, or a new one). Raises what fails before anything is
        written."""
        if envelope is not None:
            message_id: str | None = envelope.message_id
            timestamp: datetime | None = envelope.timestamp
            extra: dict[str, Any] | None = envelope.headers
        else:
            message_id = properties.message_id if properties is not None else None
            timestamp = properties.timestamp if properties is not None else None
            extra = None
        # As aiormq did: every message has an id (a return is matched to its publish by it).
        message_id = message_id or uuid.uuid4().hex
        try:
            if properties is None:
                encoded = properties_for(headers, None).encode(
                    headers=extra, message_id=message_id, timestamp=timestamp
                )
            else:
                encoded = properties_for(headers, properties.content_type).encode(
                    headers=extra,
                    correlation_id=properties.correlation_id,
                    reply_to=properties.reply_to,
                    expiration=str(properties.expiration) if properties.expiration else None,
                    message_id=message_id,
                    timestamp=timestamp,
                )
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            # Nothing was sent (the frame check before encodes them first: a last resort).
            raise unencodable_headers(exchange, routing_key, headers, exc) from None
        try:
            return hot.publish(
                exchange,
                routing_key,
                body,
                encoded,
                mandatory=mandatory,
                message_id=message_id,
                timeout=confirm_timeout if confirm_timeout is not None else _NO_TIMEOUT,
                waiter=waiter,
            )
        except Exception as exc:  # the channel is gone: nothing was written
            raise self._failure(exc, exchange, routing_key, confirm_timeout) from None

    def _failure(
        self, exc: Exception, exchange: str, routing_key: str, confirm_timeout: float | None
    ) -> Exception:
        """What a publish raises for what became of it on the hot channel."""
        if isinstance(exc, ReturnedByBroker):
            return Unroutable(
                f"message to exchange {exchange!r} with routing key {routing_key!r} is "
                "unroutable: no queue is bound to match it (published as mandatory)"
            )
        if isinstance(exc, Nacked):
            return PublishError(f"broker refused {routing_key!r} on {exchange!r}: basic.nack")
        if isinstance(exc, ChannelClosedByBroker):
            if self._dead:
                return self._gone(f"publishing {routing_key!r}", exc)
            return publish_refused(exchange, exc.code, exc.text)
        if isinstance(exc, TimeoutError):
            return PublishOutcomeUnknown(
                f"{routing_key!r} to {exchange!r} not confirmed within {confirm_timeout}s: "
                "the broker may or may not have it"
            )
        if isinstance(exc, (BrokerConnectionError, *GONE)):
            return self._gone(f"publishing {routing_key!r}", exc)
        return exc
