"""Message headers: the read-only view handed to handlers, and checks on headers users send."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError
from ._naming import BCC_HEADER, CC_HEADER, CE_READ_PREFIXES, HEADER_PREFIX, SERVICE_HEADER
from ._transport._wire import header_problem

if TYPE_CHECKING:
    from ._metadata import Metadata

__all__ = ["Headers", "check_user_headers"]


class Headers(Mapping[str, Any]):
    """The headers of a delivered message, read-only.

    A handler receives it as its second argument when it declares one:
    ``async def on_created(event: OrderCreated, headers: Headers)``. ``headers.service`` is the
    name of the publishing service (the reserved ``service`` header); ``headers.metadata`` the
    message's envelope, typed (``Metadata``).
    """

    __slots__ = ("_data", "_metadata")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        metadata: Callable[[], Metadata] | None = None,
    ) -> None:
        self._data: Mapping[str, Any] = data if data is not None else {}
        self._metadata = metadata  # made on first use: most handlers never ask

    @property
    def metadata(self) -> Metadata:
        """The message's ``Metadata`` (ids, source, time, version, attempt ...)."""
        make = self._metadata
        if make is None:
            raise AttributeError("these headers belong to no delivered message: no metadata")
        return make()

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def service(self) -> str | None:
        """The publishing service's name, or None when the publisher did not send it."""
        value = self._data.get(SERVICE_HEADER)
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        return f"Headers({dict(self._data)!r})"


_ENVELOPE_NAMES = frozenset(
    prefix + attribute
    for prefix in CE_READ_PREFIXES
    for attribute in (
        "id",
        "source",
        "type",
        "time",
        "specversion",
        "datacontenttype",
        "correlationid",
        "causationid",
        "schemaversion",
    )
)


def check_user_headers(headers: Mapping[str, Any]) -> None:
    """Raise ConfigurationError naming the first header that cannot be sent unchanged.

    Accepted values are exactly those pamqp encodes and decodes back to an equal value (see
    ``_transport._wire.value_problem``): no tuples, bytes, lossy floats, naive or fractional
    datetimes, ints beyond 64 bits, lone surrogates, or names over 128 UTF-8 bytes.
    """
    for name, value in headers.items():
        if not isinstance(name, str):
            raise ConfigurationError(f"header name {name!r} must be a str")
        if name == SERVICE_HEADER:
            raise ConfigurationError(
                f"header {SERVICE_HEADER!r} is reserved: amqp-events sets it to the publishing "
                "service's name (goamqp routes responses by it); use another name"
            )
        if name in _ENVELOPE_NAMES:
            raise ConfigurationError(
                f"header {name!r} is part of the envelope amqp-events writes on every message "
                "(CloudEvents id, source, type, time, specversion, datacontenttype, correlationid, "
                "causationid, schemaversion); other CloudEvents attributes (subject ...) are fine"
            )
        if name.startswith(HEADER_PREFIX):
            raise ConfigurationError(
                f"header {name!r}: names starting with {HEADER_PREFIX!r} are reserved for the "
                "library's retry and dead-letter bookkeeping"
            )
        if name in (CC_HEADER, BCC_HEADER) and not (
            isinstance(value, list) and all(isinstance(q, str) for q in value)
        ):
            raise ConfigurationError(
                f"header {name!r} names extra destination queues: it must be a list of str"
            )
        problem = header_problem(name, value)
        if problem is not None:
            raise ConfigurationError(f"header {name!r} cannot be sent: {problem}")
