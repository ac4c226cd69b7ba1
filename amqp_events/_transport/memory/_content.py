"""A published message's content as RabbitMQ receives it: its content header frame encoded by
pamqp (as a client would send it) and decoded by pamqp (as a consumer would read it), with
RabbitMQ's refusals of a frame over ``frame_max`` and a body over ``max_message_size``."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from pamqp import commands as spec
from pamqp.header import ContentHeader

from ..._errors import BrokerError, ConfigurationError
from .._wire import CONTENT_HEADER_PREFIX, FRAME_OVERHEAD, unencodable_headers

__all__ = ["check_limits", "received_headers"]

# RabbitMQ 3.10 caps max_message_size at 512 MiB and words its refusal differently there.
_MAX_MESSAGE_SIZE_CAP: Final = 536870912
_FRAME_MIN_SIZE: Final = 4096  # AMQP's frame-min-size: no broker offers less
_CONTENT_HEADER_FRAME_TYPE: Final = 2
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, struct.error)


class _ForeignText(str):
    """A long string whose octets are not UTF-8, as a foreign client may send: pamqp writes
    what ``encode`` returns, so it goes out unchanged (and pamqp reads it back as bytes)."""

    __slots__ = ("_octets",)

    _octets: bytes

    def __new__(cls, octets: bytes) -> _ForeignText:
        text = super().__new__(cls, octets.decode("utf-8", "replace"))
        text._octets = octets
        return text

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._octets


def check_limits(frame_max: int, max_message_size: int) -> None:
    """ConfigurationError for limits RabbitMQ would not accept."""
    if type(frame_max) is not int or frame_max < _FRAME_MIN_SIZE:
        raise ConfigurationError(
            f"frame_max must be an int of at least {_FRAME_MIN_SIZE} bytes (AMQP's minimum), "
            f"got {frame_max!r}"
        )
    if type(max_message_size) is not int or not 0 < max_message_size <= _MAX_MESSAGE_SIZE_CAP:
        raise ConfigurationError(
            f"max_message_size must be an int from 1 to {_MAX_MESSAGE_SIZE_CAP} bytes "
            f"(RabbitMQ's cap), got {max_message_size!r}"
        )


def received_headers(
    exchange: str,
    routing_key: str,
    body_size: int,
    headers: Mapping[str, Any] | None,
    properties: spec.Basic.Properties,
    *,
    frame_max: int,
    max_message_size: int,
) -> dict[str, Any]:
    """The headers a consumer reads after ``headers`` went through pamqp and RabbitMQ.

    ``properties`` holds the message's other properties. Raises PublishError when pamqp cannot
    encode a value, and BrokerError as RabbitMQ refuses: 501 FRAME_ERROR for a content header
    frame over ``frame_max`` (RabbitMQ closes the connection), 406 for a body over
    ``max_message_size`` (it closes the channel).
    """
    sent = {name: _as_sent(value) for name, value in headers.items()} if headers else {}
    properties.headers = sent
    try:
        encoded = properties.marshal()
    except _ENCODE_ERRORS as exc:
        raise unencodable_headers(exchange, routing_key, headers or {}, exc) from None
    payload = CONTENT_HEADER_PREFIX + len(encoded)
    if payload > frame_max:  # RabbitMQ's test, which tolerates the 8 bytes of frame overhead
        raise BrokerError(
            501,
            f"FRAME_ERROR - type {_CONTENT_HEADER_FRAME_TYPE}, all octets = <<>>: "
            f"{{frame_too_large,{payload},{frame_max - FRAME_OVERHEAD}}}",
        )
    if body_size > max_message_size:
        limit = "max size" if max_message_size == _MAX_MESSAGE_SIZE_CAP else "configured max size"
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - message size {body_size} is larger than {limit} "
            f"{max_message_size}",
        )
    header = ContentHeader()
    header.unmarshal(struct.pack(">HxxQ", spec.Basic.frame_id, body_size) + encoded)
    return header.properties.headers or {}


def _as_sent(value: Any) -> Any:
    """``value`` with each bytes value as the long string of octets a foreign client sends."""
    if isinstance(value, bytes):
        return _ForeignText(value)
    if isinstance(value, dict):  # other mappings stay, for pamqp to refuse as on the wire
        return {key: _as_sent(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_sent(item) for item in value]
    return value
