"""Schema versions of events: the version a consumer expects per routing key, upcasters that
turn an older version into the next, and the refusal of versions newer than it knows.

An event says its version in the ``schemaversion`` CloudEvents extension (absent: 1); its
consumer expects the version of the ``Route`` its connection knows for the key (1 without one).
Equal versions decode as they are, the common case: one header read per message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from ._codec import Decoder
from ._errors import ConfigurationError, DecodeError
from ._routes import MAX_SCHEMA_VERSION, TypeMapping
from ._topics import is_pattern, validate_routing_key

__all__ = ["Upcaster", "Versions", "check_upcaster"]

Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns an event's JSON object of one version into the next version's."""


def check_upcaster(routing_key: str, from_version: int, upcaster: Upcaster) -> None:
    validate_routing_key(routing_key, what="with_upcaster")
    if is_pattern(routing_key):
        raise ConfigurationError(
            f"with_upcaster: {routing_key!r} is a pattern; an upcaster is for one routing key"
        )
    if type(from_version) is not int or not 1 <= from_version < MAX_SCHEMA_VERSION:
        raise ConfigurationError(
            f"with_upcaster({routing_key!r}): from_version is the version it upgrades from, "
            f"an int from 1, got {from_version!r}"
        )
    if not callable(upcaster):
        raise ConfigurationError(
            f"with_upcaster({routing_key!r}, {from_version}) needs a function dict -> dict, "
            f"got {upcaster!r}"
        )


class Versions:
    """What one connection knows of schema versions."""

    __slots__ = ("_mapping", "_upcasters")

    def __init__(
        self, mapping: TypeMapping, upcasters: Mapping[str, Mapping[int, Upcaster]]
    ) -> None:
        self._mapping = mapping
        self._upcasters = upcasters

    def expected(self, routing_key: str) -> int:
        return self._mapping.version_for(routing_key)

    def check(self) -> None:
        """An upcaster must lead to a version a route of the connection expects."""
        for key, steps in self._upcasters.items():
            expected = self.expected(key)
            beyond = sorted(v for v in steps if v >= expected)
            if beyond:
                raise ConfigurationError(
                    f"with_upcaster({key!r}, {beyond[0]}): this connection expects version "
                    f"{expected} of {key!r} (from its Route, 1 without one), so nothing would "
                    f"upcast from version {beyond[0]}; give the Route version={beyond[0] + 1} "
                    "(with_type_mapping or a publisher's routes), or drop the upcaster"
                )

    def upcast(
        self, routing_key: str, body: bytes, version: int, expected: int, decode: Decoder
    ) -> Any:
        """Decode an event of an older ``version`` as ``expected``: each upcaster from
        ``version`` on, in order (a version without one is read as it is: the change was
        compatible). Raises DecodeError naming the step that failed."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"body is not JSON: {exc}") from exc
        steps = self._upcasters.get(routing_key, {})
        for step in range(version, expected):
            upcaster = steps.get(step)
            if upcaster is None:
                continue
            if not isinstance(data, dict):
                raise DecodeError(f"body is JSON {type(data).__name__}, not an object")
            try:
                data = upcaster(data)
            except Exception as exc:
                raise DecodeError(
                    f"upcaster of {routing_key!r} from version {step} to {step + 1} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return decode(json.dumps(data).encode())
