"""What a handler may know about the message it handles, beyond the event: ``Metadata``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import _naming as naming
from ._envelope import ce_value, correlation_of, message_id_of
from ._routes import MAX_SCHEMA_VERSION

if TYPE_CHECKING:
    from ._transport._base import Delivery

__all__ = ["Metadata", "metadata_of", "schema_version_of"]


@dataclass(frozen=True, slots=True)
class Metadata:
    """The envelope of a handled message, typed.

    A handler gets it as a parameter annotated ``Metadata``
    (``async def on_created(event: OrderCreated, headers: Headers, metadata: Metadata)`` or
    ``(event, metadata: Metadata)``), or from ``headers.metadata``.

    - ``message_id``: the publisher's id for the event, the same on every retry and dead letter
      (de-duplicate on it); None for a message that has none (goamqp sends none);
    - ``correlation_id``: the conversation the event belongs to; events published while this
      handler runs carry it on (None when the message has none: they start a new one);
    - ``causation_id``: the id of the message whose handler published this one, if any;
    - ``source``: the publishing service (the ``service`` header, else CloudEvents' source);
    - ``time``: when it was published (UTC, to the second), None when it does not say;
    - ``type``: the routing key it was published with;
    - ``version``: the event's schema version (1 when it does not say);
    - ``attempt``: 1 the first time a handler runs it, 2 on the first retry ...;
    - ``redelivered``: the broker delivered it before (a consumer died or was cut off).
    """

    message_id: str | None
    correlation_id: str | None
    causation_id: str | None
    source: str | None
    time: datetime | None
    type: str
    version: int
    attempt: int
    redelivered: bool


def metadata_of(delivery: Delivery, routing_key: str, attempt: int, redelivered: bool) -> Metadata:
    """The metadata of ``delivery``; made only for a handler that asks for it."""
    headers = delivery.headers
    source = headers.get(naming.SERVICE_HEADER)
    if not isinstance(source, str):
        source = ce_value(headers, "source")
    causation = ce_value(headers, "causationid")
    return Metadata(
        message_id=message_id_of(delivery),
        correlation_id=correlation_of(headers),
        causation_id=causation if isinstance(causation, str) else None,
        source=source if isinstance(source, str) else None,
        time=_time_of(headers, delivery),
        type=routing_key,
        version=schema_version_of(headers) or 1,
        attempt=attempt,
        redelivered=redelivered,
    )


def schema_version_of(headers: Mapping[str, Any]) -> int | None:
    """The schema version a message says it has, None when it says none (or nonsense)."""
    value = ce_value(headers, "schemaversion")
    if value is None:
        return None
    # A foreign header: "²".isdigit() holds but int() refuses it, and a long one is no version.
    if type(value) is str and len(value) <= 7 and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is int and 1 <= value <= MAX_SCHEMA_VERSION:
        return value
    return None


def _time_of(headers: Mapping[str, Any], delivery: Delivery) -> datetime | None:
    text = ce_value(headers, "time")
    if isinstance(text, str) and len(text) <= 64:
        try:
            return _utc(datetime.fromisoformat(text))
        except (ValueError, OverflowError):  # a foreign header: not a time we can read
            pass
    stamp = delivery.timestamp
    if isinstance(stamp, datetime):
        try:
            return _utc(stamp)
        except OverflowError:
            return None
    return None


def _utc(when: datetime) -> datetime:
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
