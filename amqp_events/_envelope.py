"""The envelope of every message we publish: a message id, the time, CloudEvents attributes,
and the correlation that flows from a handled event to the events its handler publishes.

Per message this is a random id, a clock read (formatted once per second), and a small dict;
the constant attributes (source, type, spec version ...) are in the publisher's base headers.
The handled message is kept in a context variable while its handler runs, so a publish inside
the handler finds its correlation id with no code in the handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from random import getrandbits
from typing import TYPE_CHECKING, Any, Final

from . import _naming as naming

if TYPE_CHECKING:
    from ._transport._base import Delivery

__all__ = [
    "ENVELOPE_MAX_BYTES",
    "PROPAGATION_MAX_BYTES",
    "PROPAGATION_MAX_HEADERS",
    "Envelope",
    "Handling",
    "MessageContextFilter",
    "correlation_of",
    "current_handling",
    "envelope_constants",
    "handling",
    "new_message_id",
    "outgoing_envelope",
]

# Longer correlation ids from foreign messages are not carried on (a new one starts instead):
# it bounds what the envelope adds to a header frame.
MAX_ID_CHARS: Final = 200
# What the envelope adds to a content header frame at most: its four headers and two
# properties, names and values, with AMQP's length prefixes and type tags (checked in tests).
# Trace context a tracer adds (traceparent, tracestate, baggage): bounded by the tracer.
PROPAGATION_MAX_HEADERS: Final = 4
PROPAGATION_MAX_BYTES: Final = 2048
ENVELOPE_MAX_BYTES: Final = (
    4 * (1 + 32 + 1 + 4 + MAX_ID_CHARS)
    + 2 * (1 + 64)
    + 8
    + PROPAGATION_MAX_HEADERS * (1 + 1 + 4)
    + PROPAGATION_MAX_BYTES
)

_VERSION_MASK: Final = ~(0xF000 << 64) & ~(0xC000 << 48)
_VERSION_BITS: Final = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A random (version 4) UUID as a string; as ``str(uuid.uuid4())``, at a fifth of its cost
    (``bytes.hex`` formats the 128 bits faster than a format spec does)."""
    h = (getrandbits(128) & _VERSION_MASK | _VERSION_BITS).to_bytes(16).hex()
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


class _Clock:
    """The current second, as RFC 3339 text and as a datetime, formatted once per second."""

    __slots__ = ("second", "stamp", "when")

    def __init__(self) -> None:
        self.second = -1
        self.stamp = ""
        self.when = datetime.fromtimestamp(0, UTC)

    def now(self) -> _Clock:
        second = int(time.time())
        if second != self.second:
            self.when = datetime.fromtimestamp(second, UTC)
            self.stamp = self.when.strftime("%Y-%m-%dT%H:%M:%SZ")
            self.second = second
        return self


_clock = _Clock()


class Envelope:
    """What a transport adds to one publish: the AMQP ``message_id`` and ``timestamp``
    properties, and the per-message CloudEvents headers (merged over the publish's headers)."""

    __slots__ = ("headers", "message_id", "timestamp")

    def __init__(self, message_id: str, timestamp: datetime, headers: dict[str, Any]) -> None:
        self.message_id = message_id
        self.timestamp = timestamp
        self.headers = headers


class Handling:
    """The message whose handler is running, for the publishes it makes."""

    __slots__ = ("_correlation_id", "delivery")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self._correlation_id: str | None = None

    @property
    def message_id(self) -> str | None:
        return message_id_of(self.delivery)

    @property
    def correlation_id(self) -> str:
        """The handled message's correlation id, or one started for it (the same for every
        event its handler publishes)."""
        found = self._correlation_id
        if found is None:
            found = correlation_of(self.delivery.headers) or new_message_id()
            self._correlation_id = found
        return found


_handling: ContextVar[Handling | None] = ContextVar("amqp_events_handling", default=None)
handling = _handling  # the dispatcher sets it around each handler call


def current_handling() -> Handling | None:
    return _handling.get()


def outgoing_envelope() -> Envelope:
    """The envelope of an event about to be published (from this task's context)."""
    message_id = new_message_id()
    clock = _clock.now()
    handled = _handling.get()
    if handled is None:
        # A conversation starts here: its correlation id is this first message's id.
        headers = {
            naming.CE_ID: message_id,
            naming.CE_TIME: clock.stamp,
            naming.CE_CORRELATION_ID: message_id,
        }
    else:
        headers = {
            naming.CE_ID: message_id,
            naming.CE_TIME: clock.stamp,
            naming.CE_CORRELATION_ID: handled.correlation_id,
        }
        causation = handled.message_id
        if causation is not None:
            headers[naming.CE_CAUSATION_ID] = causation
    return Envelope(message_id, clock.when, headers)


def envelope_constants(service: str, routing_key: str) -> dict[str, Any]:
    """The CloudEvents attributes that are the same for every message of ``service`` with
    ``routing_key`` (publishers keep them per key; responses make them each time)."""
    return {
        naming.CE_SPECVERSION: naming.CE_SPECVERSION_VALUE,
        naming.CE_SOURCE: service,
        naming.CE_TYPE: routing_key,
        naming.CE_DATACONTENTTYPE: naming.CONTENT_TYPE_JSON,
    }


def ce_value(headers: Mapping[str, Any], attribute: str) -> Any:
    """A CloudEvents attribute under any of the prefixes in use, or None."""
    for prefix in naming.CE_READ_PREFIXES:
        value = headers.get(prefix + attribute)
        if value is not None:
            return value
    return None


def _usable_id(value: Any) -> str | None:
    return value if type(value) is str and 0 < len(value) <= MAX_ID_CHARS else None


def correlation_of(headers: Mapping[str, Any]) -> str | None:
    """The correlation id a message carries, if it is one we can carry on."""
    return _usable_id(ce_value(headers, "correlationid"))


def message_id_of(delivery: Delivery) -> str | None:
    """The AMQP message id, else the CloudEvents id (gomessaging sends only that); goamqp
    messages have neither."""
    return _usable_id(delivery.message_id) or _usable_id(ce_value(delivery.headers, "id"))


class MessageContextFilter(logging.Filter):
    """Adds ``message_id`` and ``correlation_id`` to every log record made while a handler
    runs (``"-"`` elsewhere), so a log format can show them::

        handler.addFilter(MessageContextFilter())
        handler.setFormatter(logging.Formatter("%(correlation_id)s %(message_id)s %(message)s"))

    Add it to a handler (not a logger) to cover records of every logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        handled = _handling.get()
        if handled is None:
            record.message_id = record.correlation_id = "-"
        else:
            record.message_id = handled.message_id or "-"
            record.correlation_id = handled.correlation_id
        return True
