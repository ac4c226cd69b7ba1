"""A request's round trip: a slot, the publish with a correlation id, the wait for the response."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ._codec import Decoder, decoder_for
from ._envelope import outgoing_envelope
from ._errors import RequestTimeout, Unroutable
from ._instrument import publish_with
from ._requests import raise_if_error
from ._transport._base import OutgoingProperties

if TYPE_CHECKING:
    from ._publisher import _Target

__all__ = ["send_request"]


@lru_cache(maxsize=1024)
def _response_decoder(response_type: Any) -> Decoder:
    return decoder_for(response_type)


async def send_request(
    target: _Target,
    key: str,
    body: bytes,
    sent_headers: Mapping[str, Any],
    response_type: type[Any] | None,
    timeout: float,
) -> Any:
    """``Publisher.request`` once its event is encoded: see there."""
    destination = target.destination
    pending = destination.pending
    assert pending is not None  # checked by the caller, with the publisher's routes to name
    wanted: Any = dict if response_type is None else response_type
    decode = _response_decoder(wanted)
    correlation_id = uuid.uuid4().hex
    waiting = "for one of the max_pending slots (every one was taken)"
    deadline = asyncio.timeout(timeout)
    instrument = target.observers.instrument
    try:
        async with deadline, pending.slots():
            response = pending.expect(correlation_id)
            if instrument is not None:
                instrument.pending_requests(target.service, pending.target, 1)
            try:
                waiting = "for the broker to confirm the request (it may have been sent)"
                properties = OutgoingProperties(correlation_id=correlation_id)
                if instrument is None:
                    await target.transport.publish(
                        destination.exchange,
                        key,
                        body,
                        sent_headers,
                        properties=properties,
                        mandatory=destination.mandatory,
                        envelope=outgoing_envelope(),
                    )
                else:
                    await publish_with(
                        instrument,
                        target.transport,
                        target.service,
                        destination.exchange,
                        key,
                        body,
                        sent_headers,
                        properties=properties,
                        mandatory=destination.mandatory,
                        envelope=outgoing_envelope(),
                    )
                waiting = "for the response"
                delivery = await response
            finally:
                pending.forget(correlation_id)
                if instrument is not None:
                    instrument.pending_requests(target.service, pending.target, -1)
    except Unroutable as exc:
        raise destination.unroutable(key, exc) from exc
    except TimeoutError:
        if not deadline.expired():
            raise  # not ours to translate
        raise RequestTimeout(
            f"no response from {pending.target!r} to {key!r} within {timeout}s: still "
            f"waiting {waiting}"
        ) from None
    raise_if_error(pending.target, delivery)
    return decode(delivery.body)
