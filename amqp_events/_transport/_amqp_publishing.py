"""Publishing on RabbitMQ: one channel in confirm mode, each publish matched to its outcome.

The base of ``AmqpSession`` above ``AmqpChannels``. A publish waits for its confirm (or its
basic.return, for a mandatory one no queue took) on the aiormq channel directly, which saves an
aio-pika message object per message. aiormq matches a basic.return to its publish by message_id,
so publishes of one explicit message_id go one at a time.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from typing import Any

import aiormq
import aiormq.abc
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from .._envelope import Envelope
from .._errors import BrokerConnectionError, PublishError, PublishOutcomeUnknown, Unroutable
from .._url import redact
from ._amqp_channels import GONE, AmqpChannels, refusal
from ._base import OutgoingProperties, publish_refused
from ._wire import amqp_properties, check_header_frame, unencodable_headers

__all__ = ["AmqpPublishing"]


class _IdTurn:
    """Publishes of one message_id, one at a time in arrival order."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class AmqpPublishing(AmqpChannels):
    """A connection's publish channel (confirms on), reopened after the broker closed it."""

    def __init__(self, connection: AbstractConnection, url: str) -> None:
        super().__init__(connection, url)
        self._publish: aiormq.abc.AbstractChannel | None = None
        self._publish_lock = asyncio.Lock()
        # The last headers object whose content header frame fit: Publisher.publish without
        # user headers passes the same dict every time, so checking it once is enough.
        self._fitting_headers: object = None
        # Explicit message ids with a publish in flight: aiormq matches a basic.return to its
        # publish by message_id, so a second publish of one id waits for the first's outcome.
        self._waiting_ids: dict[str, _IdTurn] = {}

    async def _publish_channel(self) -> aiormq.abc.AbstractChannel:
        channel = self._publish
        if channel is not None and not channel.is_closed:
            return channel
        if self._dead:
            raise BrokerConnectionError(f"connection to {redact(self._url)} is closed")
        async with self._publish_lock:  # after a channel error, one task reopens it
            if self._publish is None or self._publish.is_closed:
                try:
                    self._publish = await self._channel(confirms=True)
                except GONE as exc:
                    raise self._gone("reopening the publish channel", exc) from None
            return self._publish

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
        if properties is not None or headers is not self._fitting_headers:
            fits_any = check_header_frame(
                exchange, routing_key, headers, properties, self._frame_max, envelope
            )
            if fits_any and properties is None:
                self._fitting_headers = headers
        # An envelope's message id is new: no other publish of it can be in flight.
        message_id = properties.message_id if properties is not None else None
        if not message_id or envelope is not None:
            await self._publish_now(
                exchange,
                routing_key,
                body,
                headers,
                properties,
                mandatory,
                confirm_timeout,
                envelope,
            )
            return
        turn = self._waiting_ids.get(message_id)
        if turn is None:
            turn = self._waiting_ids[message_id] = _IdTurn()
        turn.users += 1
        try:
            async with turn.lock:
                await self._publish_now(
                    exchange, routing_key, body, headers, properties, mandatory, confirm_timeout
                )
        finally:
            turn.users -= 1
            if not turn.users:
                del self._waiting_ids[message_id]

    async def _publish_now(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope | None = None,
    ) -> None:
        channel = self._publish
        if channel is None or channel.is_closed:
            channel = await self._publish_channel()
        props = amqp_properties(headers, properties, envelope)
        try:
            confirmation = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=mandatory,
                timeout=confirm_timeout,
            )
        except aiormq.exceptions.PublishError as exc:
            raise Unroutable(
                f"message to exchange {exchange!r} with routing key {routing_key!r} is "
                "unroutable: no queue is bound to match it (published as mandatory)"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(f"broker refused {routing_key!r} on {exchange!r}: {exc}") from exc
        except aiormq.exceptions.AMQPChannelError as exc:
            if self._dead:
                raise self._gone(f"publishing {routing_key!r}", exc) from None
            raise publish_refused(exchange, *refusal(exc)) from None
        except GONE as exc:
            raise self._gone(f"publishing {routing_key!r}", exc) from None
        except TimeoutError:
            raise PublishOutcomeUnknown(
                f"{routing_key!r} to {exchange!r} not confirmed within {confirm_timeout}s: "
                "the broker may or may not have it"
            ) from None
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            # pamqp failed to encode the properties: nothing was sent (the frame check above
            # encodes them first, so this is a last resort).
            raise unencodable_headers(exchange, routing_key, headers, exc) from None
        except Exception as exc:
            # aiormq fails what is pending on a closing connection with a bare Exception().
            if self._closing or self._dead:
                raise self._gone(f"publishing {routing_key!r}", exc) from None
            raise PublishError(f"{routing_key!r} to {exchange!r} not confirmed: {exc!r}") from exc
        if not isinstance(confirmation, spec.Basic.Ack):
            raise PublishError(f"broker did not ack {routing_key!r} on {exchange!r}")
