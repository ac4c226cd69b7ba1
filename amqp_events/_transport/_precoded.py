"""Content headers whose constant part is encoded once.

A publisher's headers for one routing key (goamqp's ``service``, the constant CloudEvents
attributes) are the same dict for every event; only the envelope's per-message entries (id,
time, correlation) change. pamqp encodes a table entry by entry on every publish, so here the
constant part is encoded once and kept, and each publish encodes only its own entries. AMQP
tables are sequences of entries: the order of the entries does not matter to any reader.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from pamqp import commands as spec
from pamqp import encode

__all__ = ["PrecodedHeaders", "PrecodedProperties", "precoded_headers"]

_CACHE_LIMIT: Final = 512  # publishers' per-key dicts; a user's headers dict is new each time
# id(headers) -> (headers, its entries encoded): the strong reference keeps the id unique.
_encoded: dict[int, tuple[Mapping[str, Any], bytes]] = {}
_LENGTH = struct.Struct(">I")


class PrecodedHeaders(dict[str, Any]):
    """All the headers of one publish, and how to encode them: the constant part's entries
    already encoded, then the per-message ones."""

    __slots__ = ("constant", "extra")

    constant: bytes
    extra: dict[str, Any]


class PrecodedProperties(spec.Basic.Properties):
    """``Basic.Properties`` that encode ``PrecodedHeaders`` from their parts."""

    __slots__ = spec.Basic.Properties.__slots__  # pamqp marshals what __slots__ lists

    def encode_property(self, name: str, value: Any) -> bytes:
        if type(value) is PrecodedHeaders:
            entries = value.constant + encode.field_table(value.extra)[4:]
            return _LENGTH.pack(len(entries)) + entries
        return super().encode_property(name, value)


def precoded_headers(constant: Mapping[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``{**constant, **extra}``, encoded from its parts when no name is in both (else as a
    plain dict: pamqp then encodes the merged table itself)."""
    headers = PrecodedHeaders(constant)
    size = len(headers)
    headers.update(extra)
    if len(headers) != size + len(extra):
        return dict(headers)
    key = id(constant)
    cached = _encoded.get(key)
    if cached is None or cached[0] is not constant:
        if len(_encoded) >= _CACHE_LIMIT:
            del _encoded[next(iter(_encoded))]
        cached = _encoded[key] = (constant, encode.field_table(dict(constant))[4:])
    headers.constant = cached[1]
    headers.extra = extra
    return headers
