"""Request/response between services: answering requests, and awaiting responses.

The wire is goamqp's: a request goes to ``<target>.direct.exchange.request`` with the request's
routing key; the response goes to ``<target>.headers.exchange.response`` with the same routing key
and header ``service`` = the caller, which routes it to the caller's response queue. Awaitable
requests add a ``correlation_id``, which an amqp-events responder copies to its response (goamqp
does not).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ._codec import encode
from ._envelope import envelope_constants, outgoing_envelope
from ._errors import ConfigurationError, PublishError, RemoteError
from ._failures import describe
from ._headers import check_user_headers
from ._instrument import Instrument, publish_with
from ._naming import ERROR_HEADER, ERROR_TYPE_HEADER, SERVICE_HEADER, response_exchange
from ._observe import Observers
from ._topology import Topology
from ._transport._base import Delivery, OutgoingProperties, Transport
from ._transport._wire import safe_text

__all__ = [
    "MAX_PENDING_REQUESTS",
    "PendingRequests",
    "Responder",
    "raise_if_error",
    "send_service_response",
]

log = logging.getLogger(__name__)

_EMPTY_BODY = b"{}"

# Awaited requests per target service: bounds the futures a caller keeps.
MAX_PENDING_REQUESTS = 10_000


class Responder:
    """Publishes a request handler's return value to the caller's response queue."""

    __slots__ = ("_exchange", "_observers", "service", "transport")

    def __init__(
        self, service: str, transport: Transport, observers: Observers | None = None
    ) -> None:
        self.service = service
        self._exchange = response_exchange(service)
        self.transport = transport
        self._observers = observers  # its instrument sees the responses

    def caller_of(self, delivery: Delivery) -> str | None:
        caller = delivery.headers.get(SERVICE_HEADER)
        return caller if isinstance(caller, str) and caller else None

    async def send(self, delivery: Delivery, key: str, result: Any) -> None:
        """Send ``result`` back with the request's routing key ``key``; raise
        ConfigurationError or PublishError (Unroutable: the caller has no response queue) if it
        cannot be."""
        if result is None:
            if delivery.correlation_id is not None:
                await self.send_error(
                    delivery, key, ConfigurationError("the request handler returned no response")
                )
            return  # goamqp's rule: a handler that returns nothing sends no response
        if not isinstance(result, BaseModel):
            raise ConfigurationError(
                f"request handler for {key!r} returned {type(result).__name__}; a response "
                "must be a pydantic model"
            )
        await self._publish(delivery, key, encode(result), {})

    async def send_error(self, delivery: Delivery, key: str, exc: BaseException) -> None:
        await self._publish(
            delivery,
            key,
            _EMPTY_BODY,
            {
                ERROR_TYPE_HEADER: safe_text(type(exc).__name__, 200),
                ERROR_HEADER: safe_text(describe(exc), 1000),
            },
        )

    async def _publish(
        self, delivery: Delivery, key: str, body: bytes, extra: Mapping[str, Any]
    ) -> None:
        caller = self.caller_of(delivery)
        if caller is None:
            raise PublishError(
                f"cannot answer request {key!r}: it has no string {SERVICE_HEADER!r} header "
                "naming the caller"
            )
        properties = (
            OutgoingProperties(correlation_id=delivery.correlation_id)
            if delivery.correlation_id is not None
            else None
        )
        # Mandatory: a response that no caller's queue takes would vanish; the request is
        # dead-lettered instead.
        await _publish(
            self.transport,
            None if self._observers is None else self._observers.instrument,
            self.service,
            self._exchange,
            key,
            body,
            {**extra, **envelope_constants(self.service, key), SERVICE_HEADER: caller},
            properties=properties,
        )


async def _publish(
    transport: Transport,
    instrument: Instrument | None,
    service: str,
    exchange: str,
    key: str,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    properties: OutgoingProperties | None = None,
) -> None:
    """A response's publish, mandatory, seen by the connection's instrument if it has one."""
    if instrument is None:
        await transport.publish(
            exchange,
            key,
            body,
            headers,
            properties=properties,
            mandatory=True,
            envelope=outgoing_envelope(),
        )
    else:
        await publish_with(
            instrument,
            transport,
            service,
            exchange,
            key,
            body,
            headers,
            properties=properties,
            mandatory=True,
            envelope=outgoing_envelope(),
        )


class PendingRequests:
    """The requests one service awaits from one target, by correlation id; bounded."""

    __slots__ = ("_futures", "_slots", "limit", "target")

    def __init__(self, target: str, limit: int) -> None:
        self.target = target
        self.limit = limit
        self._futures: dict[str, asyncio.Future[Delivery]] = {}
        # Created lazily: it must belong to the running loop.
        self._slots: asyncio.Semaphore | None = None

    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        return self._slots

    def expect(self, correlation_id: str) -> asyncio.Future[Delivery]:
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._futures[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._futures.pop(correlation_id, None)

    def resolve(self, delivery: Delivery) -> bool:
        """Hand ``delivery`` to the request awaiting it; False when none does (any more)."""
        correlation_id = delivery.correlation_id
        if correlation_id is None:
            return False
        future = self._futures.pop(correlation_id, None)
        if future is None or future.done():
            return False
        future.set_result(delivery)
        return True

    def fail_all(self, exc: BaseException) -> None:
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(exc)


def raise_if_error(target: str, delivery: Delivery) -> None:
    error_type = delivery.headers.get(ERROR_TYPE_HEADER)
    if error_type is not None:
        raise RemoteError(target, str(error_type), str(delivery.headers.get(ERROR_HEADER, "")))


async def send_service_response(
    transport: Transport,
    service: str,
    topology: Topology,
    target_service: str,
    routing_key: str,
    response: BaseModel,
    headers: Mapping[str, Any] | None,
    instrument: Instrument | None = None,
) -> None:
    """``Connection.publish_service_response``: a response no request handler returned."""
    exchange = response_exchange(service)
    if not any(e.name == exchange for e in topology.exchanges):
        raise ConfigurationError(
            f"publish_service_response: {service!r} declares no response exchange "
            f"{exchange!r}; set up a service_request_consumer on this connection"
        )
    if not isinstance(target_service, str) or not target_service:
        raise ConfigurationError(
            f"publish_service_response: target service must be a non-empty str, got "
            f"{target_service!r}"
        )
    if headers:
        check_user_headers(headers)
    await _publish(
        transport,
        instrument,
        service,
        exchange,
        routing_key,
        encode(response),
        {
            **(headers or {}),
            **envelope_constants(service, routing_key),
            SERVICE_HEADER: target_service,
        },
    )
