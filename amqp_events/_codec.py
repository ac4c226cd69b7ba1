"""JSON bodies <-> pydantic models. Decoders are built once per handler, never per message."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from ._errors import DecodeError

__all__ = ["Decoder", "decoder_for", "encode", "is_event_type"]

Decoder = Callable[[bytes], Any]


def is_event_type(candidate: object) -> bool:
    """A pydantic model class, or ``dict`` for raw JSON objects."""
    if candidate is dict:
        return True
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def encode(event: BaseModel) -> bytes:
    # by_alias: a model that declares aliases (e.g. Go's "Id") reads and writes the same names.
    return event.__pydantic_serializer__.to_json(event, by_alias=True)


def decoder_for(event_type: type[Any]) -> Decoder:
    """A function that turns a JSON body into ``event_type`` or raises DecodeError."""
    if event_type is dict:
        return _decode_dict
    if not (isinstance(event_type, type) and issubclass(event_type, BaseModel)):
        raise TypeError(f"not an event type: {event_type!r}")
    validate_json = event_type.model_validate_json
    name = event_type.__name__

    def decode(body: bytes) -> Any:
        try:
            return validate_json(body)
        except ValidationError as exc:
            raise DecodeError(f"body does not decode into {name}: {_first_error(exc)}") from exc

    return decode


def _decode_dict(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError(f"body is JSON {type(value).__name__}, not an object")
    return value


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
