"""Handlers as users register them, and their event types resolved once, at start."""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._codec import Decoder, decoder_for, is_event_type
from ._errors import ConfigurationError
from ._metadata import Metadata
from ._retry import RetryPolicy
from ._routes import TypeMapping
from ._topics import is_pattern, topic_matches

__all__ = ["Handler", "HandlerSpec", "ResolvedHandler", "Takes", "resolve"]

Handler: TypeAlias = Callable[..., Awaitable[Any]]


class Takes(enum.IntEnum):
    """What a handler takes besides the event."""

    EVENT = 0
    HEADERS = 1  # (event, headers)
    METADATA = 2  # (event, metadata: Metadata)
    HEADERS_AND_METADATA = 3  # (event, headers, metadata)


def handler_name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A handler as registered: the key it consumes and, optionally, its event type."""

    routing_key: str
    handler: Handler
    event_type: Any = None
    retry: RetryPolicy | None = None  # None: the connection's policy


@dataclass(frozen=True, slots=True)
class ResolvedHandler:
    """A handler ready for dispatch: how to decode each key it receives, and how to call it."""

    routing_key: str
    handler: Handler
    takes: Takes
    # One decoder for every key, or (for a union annotation) one per concrete routing key.
    decoder: Decoder | None
    decoder_by_key: dict[str, Decoder] | None
    retry: RetryPolicy
    event_types: tuple[Any, ...] = ()  # what the handler takes, for messages about it

    @property
    def name(self) -> str:
        return handler_name(self.handler)

    def describe_types(self) -> str:
        return " | ".join(getattr(t, "__name__", repr(t)) for t in self.event_types)

    def decoder_for_key(self, routing_key: str) -> Decoder | None:
        if self.decoder is not None:
            return self.decoder
        assert self.decoder_by_key is not None
        return self.decoder_by_key.get(routing_key)


def check_handler(spec: HandlerSpec) -> Takes:
    """Check the handler's shape at registration; return what it takes besides the event."""
    handler = spec.handler
    name = handler_name(handler)
    if not callable(handler):
        raise ConfigurationError(f"handler for {spec.routing_key!r} is not callable: {handler!r}")
    if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        raise ConfigurationError(
            f"handler {name} for {spec.routing_key!r} must be an async function (async def)"
        )
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"handler {name}: cannot read its signature: {exc}") from None
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) not in (1, 2, 3):
        raise ConfigurationError(
            f"handler {name} for {spec.routing_key!r} takes {len(positional)} required "
            "arguments; it must take (event), (event, headers), (event, metadata: Metadata) "
            "or (event, headers, metadata: Metadata)"
        )
    if len(positional) == 1:
        return Takes.EVENT
    if len(positional) == 2:
        return Takes.METADATA if _is_metadata(positional[1]) else Takes.HEADERS
    if _is_metadata(positional[1]) or positional[2].annotation not in (
        inspect.Parameter.empty,
        *_METADATA_ANNOTATIONS,
    ):
        raise ConfigurationError(
            f"handler {name} for {spec.routing_key!r} takes three arguments: they must be "
            "(event, headers, metadata: Metadata), in that order"
        )
    return Takes.HEADERS_AND_METADATA


_METADATA_ANNOTATIONS = (Metadata, "Metadata")  # "Metadata" under postponed annotations


def _is_metadata(parameter: inspect.Parameter) -> bool:
    return parameter.annotation in _METADATA_ANNOTATIONS


def _annotated_event_type(handler: Handler) -> Any:
    try:
        hints = typing.get_type_hints(handler)
    except Exception as exc:  # unresolvable forward references and the like
        raise ConfigurationError(
            f"handler {handler_name(handler)}: cannot resolve its annotations: {exc}"
        ) from None
    params = list(inspect.signature(handler).parameters)
    return hints.get(params[0]) if params else None


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return None


def resolve(spec: HandlerSpec, mapping: TypeMapping, default_retry: RetryPolicy) -> ResolvedHandler:
    """Find the handler's event type(s), from the explicit type or the annotation.

    A union annotation (``OrderCreated | OrderUpdated``) is resolved per routing key through
    ``mapping``: the routes its own connection knows (``with_type_mapping`` and the routes of
    the publishers set up on it), never a ``Route`` made elsewhere in the process.
    """
    takes = check_handler(spec)
    name = handler_name(spec.handler)
    event_type = spec.event_type
    source = "event_type argument"
    if event_type is None:
        event_type = _annotated_event_type(spec.handler)
        source = "annotation"
    if typing.get_origin(event_type) is dict:
        event_type = dict
    retry = spec.retry or default_retry
    if is_event_type(event_type):
        return ResolvedHandler(
            spec.routing_key,
            spec.handler,
            takes,
            decoder_for(event_type),
            None,
            retry,
            (event_type,),
        )
    members = _union_members(event_type)
    if members and all(is_event_type(m) and m is not dict for m in members):
        return _resolve_union(spec, members, mapping, takes, retry)
    if event_type is None:
        raise ConfigurationError(
            f"handler {name} for {spec.routing_key!r} has no event type: annotate its first "
            "parameter with a pydantic model (or dict), or pass the type as the third argument"
        )
    raise ConfigurationError(
        f"handler {name} for {spec.routing_key!r}: {event_type!r} (from its {source}) is not an "
        "event type: use a pydantic model class, dict, or a union of models"
    )


def _resolve_union(
    spec: HandlerSpec,
    members: tuple[Any, ...],
    mapping: TypeMapping,
    takes: Takes,
    retry: RetryPolicy,
) -> ResolvedHandler:
    name = handler_name(spec.handler)
    key = spec.routing_key
    wanted = " | ".join(m.__name__ for m in members)
    unmapped = [m.__name__ for m in members if mapping.key_for(m) is None]
    fix = (
        "add with_type_mapping(Route(<type>, '<routing key>'), ...) to this connection's "
        "setup (or set up a publisher with those routes on it), or pass the type as the third "
        "argument; a Route made elsewhere in the process does not count"
    )
    if is_pattern(key) and unmapped:
        raise ConfigurationError(
            f"handler {name} for {key!r} is annotated {wanted}, but {', '.join(unmapped)} "
            f"{'has' if len(unmapped) == 1 else 'have'} no route on this connection, so the "
            f"handler could not decode such events: {fix}"
        )
    by_key: dict[str, Decoder] = {}
    for member in members:
        member_key = mapping.key_for(member)
        if member_key is not None and topic_matches(key, member_key):
            by_key[member_key] = decoder_for(member)
    if not is_pattern(key) and key not in by_key:
        raise ConfigurationError(
            f"handler {name} for {key!r} is annotated {wanted}, but no type of the union is "
            f"mapped to {key!r} on this connection: add with_type_mapping(Route(<type>, "
            f"{key!r})) to its setup, or pass the type as the third argument; a Route made "
            "elsewhere in the process does not count"
        )
    if not by_key:
        raise ConfigurationError(
            f"handler {name} for {key!r} is annotated {wanted}, but none of their routes on "
            f"this connection matches {key!r}: bind a pattern their keys match, or {fix}"
        )
    return ResolvedHandler(key, spec.handler, takes, None, by_key, retry, members)
