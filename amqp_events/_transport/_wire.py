"""What AMQP 0-9-1 can carry, as pamqp encodes it and RabbitMQ accepts it.

Header values must survive pamqp's encoding and decoding unchanged; the content header frame
(properties and headers) must fit the connection's ``frame_max``, because it cannot be split:
RabbitMQ answers a larger one with FRAME_ERROR and closes the whole connection.
"""

from __future__ import annotations

import datetime
import decimal
import re
import struct
from collections.abc import Mapping
from typing import Any, Final

from pamqp import commands as spec

from .._envelope import ENVELOPE_MAX_BYTES, Envelope
from .._errors import PublishError
from .._naming import (
    BCC_HEADER,
    BROKER_HEADER_PREFIX,
    CC_HEADER,
    CONTENT_TYPE_JSON,
    DELIVERY_MODE_PERSISTENT,
)
from ._base import OutgoingProperties
from ._precoded import PrecodedProperties, precoded_headers

__all__ = [
    "CONTENT_HEADER_PREFIX",
    "FRAME_MAX_DEFAULT",
    "FRAME_OVERHEAD",
    "MAX_FIELD_NAME_BYTES",
    "MAX_MESSAGE_SIZE_DEFAULT",
    "UNLIMITED_FRAME_MAX",
    "amqp_properties",
    "carried_headers",
    "check_header_frame",
    "header_frame_size",
    "header_problem",
    "safe_text",
    "unencodable_headers",
    "value_problem",
]

FRAME_MAX_DEFAULT: Final = 131072  # RabbitMQ's default frame_max
MAX_MESSAGE_SIZE_DEFAULT: Final = 134217728  # RabbitMQ 3.10's default max_message_size (body)
# A frame_max of 0 means "no limit"; a frame's size field is 32 bits, so that is the real one.
UNLIMITED_FRAME_MAX: Final = 0xFFFFFFFF
# Frame type octet, channel short, payload size long, frame-end octet.
FRAME_OVERHEAD: Final = 8
# A content header's payload starts with class id, weight and body size (2 + 2 + 8 bytes).
CONTENT_HEADER_PREFIX: Final = 12
# pamqp silently truncates longer field names.
MAX_FIELD_NAME_BYTES: Final = 128
# aiormq gives a publish without a message_id a uuid4 hex one, which the frame carries too.
_GENERATED_MESSAGE_ID: Final = "0" * 32

_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_MAX_TIMESTAMP = 0xFFFFFFFF  # pamqp reads larger timestamps as milliseconds
_FLOAT32 = struct.Struct(">f")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CUT_MARKER: Final = "…"
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, struct.error)


# -- what a header value may be ------------------------------------------------------------------


def value_problem(value: Any) -> str | None:
    """What stops ``value`` from travelling in AMQP headers unchanged, and what would fix it;
    None when pamqp encodes it and decodes it back to an equal value."""
    if isinstance(value, str):
        return _text_problem(value, "a str")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return None
        return (
            f"the int {value} is outside AMQP's signed 64-bit range: send it as a str "
            "(or a Decimal of at most 9 digits)"
        )
    if isinstance(value, float):
        return _float_problem(value)
    if isinstance(value, decimal.Decimal):
        return _decimal_problem(value)
    if isinstance(value, datetime.datetime):
        return _datetime_problem(value)
    if isinstance(value, bytearray):
        return None
    if isinstance(value, list):
        for item in value:
            problem = value_problem(item)
            if problem is not None:
                return f"in a list: {problem}"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _name_problem(key, "table key") or value_problem(item)
            if problem is not None:
                return f"in table key {key!r}: {problem}"
        return None
    if isinstance(value, bytes):
        return (
            "a bytes value cannot be encoded by pamqp: send a bytearray (AMQP byte array) or a str"
        )
    if isinstance(value, tuple):
        return "a tuple cannot be encoded by pamqp: send a list"
    return (
        f"a {type(value).__name__} value cannot be sent in AMQP headers: use str, int, float, "
        "bool, Decimal, aware datetime, bytearray, None, or lists and dicts of those"
    )


def header_problem(name: Any, value: Any) -> str | None:
    """What stops header ``name`` (with ``value``) from being sent unchanged, or None."""
    return _name_problem(name, "header name") or value_problem(value)


def _name_problem(name: Any, what: str) -> str | None:
    if not isinstance(name, str):
        return f"the {what} {name!r} must be a str"
    problem = _text_problem(name, f"the {what}")
    if problem is not None:
        return problem
    size = len(name.encode("utf-8"))
    if size > MAX_FIELD_NAME_BYTES:
        return (
            f"the {what} is {size} UTF-8 bytes, over AMQP's {MAX_FIELD_NAME_BYTES} "
            "(pamqp would silently truncate it): use a shorter name"
        )
    return None


def _text_problem(text: str, what: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"{what} holds a lone surrogate, which is not valid UTF-8: repair it, e.g. with "
            "text.encode('utf-8', 'replace').decode()"
        )
    return None


def _float_problem(value: float) -> str | None:
    try:
        survives = _FLOAT32.unpack(_FLOAT32.pack(value))[0] == value
    except OverflowError:
        survives = False
    if survives:
        return None
    return (
        f"the float {value!r} would arrive changed: pamqp sends every float as a 32-bit float "
        "('f'); send it as a str, or as a Decimal, which travels exactly"
    )


def _decimal_problem(value: decimal.Decimal) -> str | None:
    if not value.is_finite():
        return f"the Decimal {value} is not finite: AMQP decimals are numbers; send a str"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent > 0:
        scale, mantissa = 0, int(value)
    else:
        scale, mantissa = -exponent, int(value.scaleb(-exponent))
    if scale <= 255 and _INT32[0] <= mantissa <= _INT32[1]:
        return None
    return (
        f"the Decimal {value} does not fit AMQP's decimal (a scale of 0 to 255 digits and a "
        "signed 32-bit value): round it, or send it as a str"
    )


def _datetime_problem(value: datetime.datetime) -> str | None:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return (
            f"the naive datetime {value.isoformat()} would be read as UTC and arrive as an "
            "aware one: give it a tzinfo (datetime.UTC), or send an ISO 8601 str"
        )
    if value.microsecond:
        return (
            f"the datetime {value.isoformat()} would lose its fraction: AMQP timestamps are "
            "whole seconds; use .replace(microsecond=0), or send an ISO 8601 str"
        )
    if not 0 <= value.timestamp() <= _MAX_TIMESTAMP:
        return (
            f"the datetime {value.isoformat()} is outside what AMQP timestamps carry (1970 to "
            "2106, UTC): send it as an ISO 8601 str"
        )
    return None


# -- the content header frame --------------------------------------------------------------------


def amqp_properties(
    headers: Mapping[str, Any],
    properties: OutgoingProperties | None,
    envelope: Envelope | None = None,
) -> spec.Basic.Properties:
    """The properties our AMQP session sends with a message (persistent, JSON by default);
    the ``envelope``'s headers go over ``headers``, its id and time into the properties."""
    if envelope is not None:
        table = precoded_headers(headers, envelope.headers)
        if properties is None:
            return PrecodedProperties(
                content_type=CONTENT_TYPE_JSON,
                delivery_mode=DELIVERY_MODE_PERSISTENT,
                headers=table,
                message_id=envelope.message_id,
                timestamp=envelope.timestamp,
            )
    else:
        table = headers if isinstance(headers, dict) else dict(headers)
        if properties is None:
            return spec.Basic.Properties(
                content_type=CONTENT_TYPE_JSON,
                delivery_mode=DELIVERY_MODE_PERSISTENT,
                headers=table,
            )
    return PrecodedProperties(
        content_type=properties.content_type or CONTENT_TYPE_JSON,
        delivery_mode=DELIVERY_MODE_PERSISTENT,
        headers=table,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=envelope.message_id if envelope is not None else properties.message_id,
        expiration=str(properties.expiration) if properties.expiration else None,
        timestamp=envelope.timestamp if envelope is not None else properties.timestamp,
    )


def content_header_frame_size(properties: spec.Basic.Properties) -> int:
    """Bytes of the content header frame carrying ``properties``, frame overhead included.

    Raises pamqp's TypeError (or ValueError, OverflowError, struct.error) when a value cannot
    be encoded.
    """
    return FRAME_OVERHEAD + CONTENT_HEADER_PREFIX + len(properties.marshal())


def header_frame_size(
    headers: Mapping[str, Any],
    properties: OutgoingProperties | None,
    envelope: Envelope | None = None,
) -> int:
    """Bytes of the content header frame our AMQP session sends for a message with these
    ``headers``, ``properties`` and ``envelope`` (frame overhead included), to compare with
    ``frame_max``."""
    props = amqp_properties(headers, properties, envelope)
    if not props.message_id:
        props.message_id = _GENERATED_MESSAGE_ID
    return content_header_frame_size(props)


def check_header_frame(
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any],
    properties: OutgoingProperties | None,
    frame_max: int,
    envelope: Envelope | None = None,
) -> bool:
    """PublishError, before anything is sent, when the message's content header frame would
    exceed ``frame_max`` (the broker would close the connection) or cannot be encoded.

    Returns whether these ``headers`` fit with any envelope (one counts at its largest,
    ``ENVELOPE_MAX_BYTES``), so that a caller may check them once; False when only this
    message's envelope was checked (they are within a kilobyte of the limit)."""
    limit = frame_max or UNLIMITED_FRAME_MAX
    fits_any = True
    try:
        size = header_frame_size(headers, properties)
        if envelope is not None and size + ENVELOPE_MAX_BYTES > limit:
            size = header_frame_size(headers, properties, envelope)
            fits_any = False
    except _ENCODE_ERRORS as exc:
        raise unencodable_headers(exchange, routing_key, headers, exc) from None
    if size > limit:
        raise PublishError(
            f"message to exchange {exchange!r} with routing key {routing_key!r} not sent: its "
            f"content header frame (properties and headers) is {size} bytes, over the "
            f"connection's frame_max of {frame_max} bytes, and the broker would close the "
            "connection; send fewer or smaller headers and put the data in the body"
        )
    return fits_any


def unencodable_headers(
    exchange: str, routing_key: str, headers: Mapping[str, Any], exc: BaseException
) -> PublishError:
    """The PublishError for a message whose properties pamqp failed to encode (``exc``),
    naming the header at fault when there is one."""
    where = f"message to exchange {exchange!r} with routing key {routing_key!r} not sent"
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            return PublishError(f"{where}: header {name!r} cannot be encoded: {problem}")
    return PublishError(
        f"{where}: it cannot be encoded ({type(exc).__name__}: {exc}); check the types of "
        "its properties and the lengths of the routing key and property strings (at most "
        "255 bytes each)"
    )


# -- carrying a delivered message's headers over -------------------------------------------------


def carried_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """What a republish of ours (retry, dead letter) may carry over from a delivered message.

    A new dict without ``CC``, ``BCC`` and every ``x-`` header (the broker's: RabbitMQ 3.13+
    owns them), with every value made encodable: bytes (a foreign string that is not UTF-8)
    become bytearray, lone surrogates are replaced. Nothing else changes.
    """
    carried: dict[str, Any] = {}
    for name, value in headers.items():
        if name in (CC_HEADER, BCC_HEADER) or name.startswith(BROKER_HEADER_PREFIX):
            continue
        carried[_encodable_text(name)] = _encodable(value)
    return carried


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return _encodable_text(value)
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, list | tuple):
        return [_encodable(item) for item in value]
    if isinstance(value, Mapping):
        return {_encodable_text(str(k)): _encodable(v) for k, v in value.items()}
    return value


def _encodable_text(text: str) -> str:
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def safe_text(text: str, max_bytes: int) -> str:
    """``text`` as valid UTF-8 (lone surrogates replaced) of at most ``max_bytes`` bytes, cut at
    a character boundary and ending in ``…`` when it had to be cut."""
    text = _encodable_text(text)
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    marker = _CUT_MARKER.encode("utf-8")
    room = max_bytes - len(marker)
    if room < 0:
        return data[:max_bytes].decode("utf-8", "ignore")
    # "ignore" drops a character split at the cut.
    return data[:room].decode("utf-8", "ignore") + _CUT_MARKER
