"""``Publisher.publish_many``'s window: every event written in one transport batch, with no
task per event, then each one's outcome as ``publish`` would raise it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ._codec import encode
from ._envelope import outgoing_envelope
from ._errors import Unroutable
from ._transport._base import PublishItem

if TYPE_CHECKING:
    from ._publisher import _Target

__all__ = ["publish_batch"]

log = logging.getLogger("amqp_events._publisher")  # its messages are the publisher's


async def publish_batch(
    target: _Target,
    events: list[BaseModel],
    mandatory: bool | None,
    routing_key: Callable[[BaseModel], str],
    headers_for: Callable[[str], Mapping[str, Any]],
) -> list[BaseException | None]:
    """``publish`` of each of ``events`` (not instrumented), in one transport batch: each
    one's exception, or None when it was confirmed. ``routing_key`` and ``headers_for`` are the
    publisher's (they raise for an event without a route, a bad header: that event fails
    alone)."""
    destination = target.destination
    must_route = destination.mandatory if mandatory is None else mandatory
    outcomes: list[BaseException | None] = [None] * len(events)
    items: list[PublishItem] = []
    keys: list[tuple[int, str]] = []
    for n, event in enumerate(events):
        try:
            key = routing_key(event)
            item = PublishItem(
                destination.exchange,
                key,
                encode(event),
                headers_for(key),
                must_route,
                outgoing_envelope(),
            )
        except Exception as exc:
            outcomes[n] = exc
            continue
        items.append(item)
        keys.append((n, key))
    results = await target.transport.publish_batch(items)
    observer = target.observers.current
    for (n, key), result in zip(keys, results, strict=True):
        if result is None:
            if observer is not None:
                observer.published(target.service, destination.exchange, key, events[n])
        elif isinstance(result, Unroutable):
            outcomes[n] = destination.unroutable(key, result)
        else:
            outcomes[n] = result
    log.debug(
        "%s: published %d of %d events to %r",
        target.service,
        outcomes.count(None),
        len(events),
        destination.exchange,
    )
    return outcomes
