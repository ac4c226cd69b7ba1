"""``amqp-events publish``: one event sent by hand, with the envelope a service would give it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
from pamqp import commands as spec

from .._envelope import envelope_constants, outgoing_envelope
from .._errors import ConfigurationError
from .._headers import check_user_headers
from .._naming import CONTENT_TYPE_JSON, SERVICE_HEADER
from ._broker import open_broker
from ._errors import EXIT_FOUND_PROBLEMS, EXIT_NOT_FOUND, CliError

__all__ = ["parse_body", "parse_headers", "publish_one"]


def parse_body(text: str) -> bytes:
    """The event as JSON text: checked, sent as it is."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"publish: JSON is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"publish: an event is a JSON object, got JSON {type(value).__name__}")
    return text.encode()


def parse_headers(pairs: Sequence[str]) -> dict[str, Any]:
    """``--header name=value`` options; a value that is JSON (a number, true ...) is sent as
    that, anything else as text."""
    headers: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"publish: --header takes name=value, got {pair!r}")
        try:
            headers[name] = json.loads(value)
        except ValueError:
            headers[name] = value
    try:
        check_user_headers(headers)
    except ConfigurationError as exc:
        raise CliError(f"publish: {exc}") from None
    return headers


async def publish_one(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, Any],
    *,
    service: str,
    mandatory: bool,
) -> str:
    """Publish and wait for the broker's confirm; return the message id."""
    envelope = outgoing_envelope()
    sent = {
        **headers,
        **envelope_constants(service, routing_key),
        **envelope.headers,
        SERVICE_HEADER: service,
    }
    message = aio_pika.Message(
        body,
        headers=sent,
        content_type=CONTENT_TYPE_JSON,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope.message_id,
        timestamp=envelope.timestamp,
    )
    async with open_broker(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        try:
            target = await channel.get_exchange(exchange, ensure=bool(exchange))
            confirmation = await target.publish(message, routing_key, mandatory=mandatory)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise CliError(
                f"publish: exchange {exchange!r} does not exist", EXIT_NOT_FOUND
            ) from None
        except aiormq.exceptions.PublishError:
            confirmation = None
    returned = confirmation is None or isinstance(
        getattr(confirmation, "delivery", None), spec.Basic.Return
    )
    if returned:  # aio-pika answers a returned message with it, or raises, by version
        raise CliError(
            f"publish: nothing is bound to exchange {exchange!r} for {routing_key!r}: the "
            "event was returned, not stored (--no-mandatory sends it anyway)",
            EXIT_FOUND_PROBLEMS,
        )
    if not isinstance(confirmation, spec.Basic.Ack):
        raise CliError(
            f"publish: the broker refused the event: {confirmation!r}", EXIT_FOUND_PROBLEMS
        )
    return envelope.message_id
