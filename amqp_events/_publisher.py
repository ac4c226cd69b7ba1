"""Publisher: event type -> routing key, encode, publish, wait for the broker's confirm."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from . import _naming as naming
from ._codec import encode
from ._envelope import envelope_constants, outgoing_envelope
from ._errors import (
    ConfigurationError,
    PublishError,
    PublishOutcomeUnknown,
    Unroutable,
)
from ._headers import check_user_headers
from ._instrument import publish_with
from ._naming import CC_HEADER, SERVICE_HEADER
from ._observe import Observers
from ._pending_publish import PendingPublish
from ._publish_batch import publish_batch
from ._request_round_trip import send_request
from ._requests import PendingRequests
from ._routes import Route, TypeMapping
from ._transport._base import Transport

__all__ = ["Destination", "PreparedPublish", "Publisher"]

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a publisher sends: set by a setup function (event stream, service, queue)."""

    exchange: str
    description: str
    cc: tuple[str, ...] = ()  # sender-selected destination queues (queue_publisher)
    mandatory: bool = False
    pending: PendingRequests | None = field(default=None, compare=False)
    target_service: str | None = None  # requests: the service that should consume them

    def unroutable(self, routing_key: str, exc: Unroutable) -> Unroutable:
        """The error for a message the broker returned: for requests, name the missing service."""
        if self.target_service is None:
            return exc
        return Unroutable(
            f"no service {self.target_service!r} consumes requests {routing_key!r}: nothing is "
            f"bound to exchange {self.exchange!r} for that key; start the service (it declares "
            "its request queue) or check the routing key"
        )


@dataclass(frozen=True, slots=True)
class PreparedPublish:
    """One publish, ready to send as it is (``Publisher._prepare``): the outbox keeps these."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]  # the envelope's included
    message_id: str
    timestamp: datetime
    mandatory: bool


@dataclass(frozen=True, slots=True)
class _Target:
    transport: Transport
    destination: Destination
    service: str
    # Per routing key, the headers every event with it carries: goamqp's service header and
    # the constant CloudEvents attributes (the envelope adds the per-message ones).
    headers_by_key: dict[str, dict[str, Any]]
    description: str
    observers: Observers


class Publisher:
    """Publishes events; each event type is published with the routing key of its ``Route``.

    ``Publisher(Route(OrderCreated, "Order.Created"))``, attached to a connection by a setup such
    as ``event_stream_publisher(publisher)``. ``await publisher.publish(event)`` returns once the
    broker confirmed the message (publisher confirms), or raises ``PublishError``.
    """

    __slots__ = ("_closed_connection", "_key_by_type", "_mapping", "_target")

    def __init__(self, *routes: Route) -> None:
        for route in routes:
            if not isinstance(route, Route):
                raise ConfigurationError(
                    f"Publisher takes Route(event_type, routing_key) arguments, got {route!r}"
                )
        self._mapping = TypeMapping(routes)
        # The hot path does one dict lookup by exact type.
        self._key_by_type: dict[type[Any], str] = {r.event_type: r.routing_key for r in routes}
        self._target: _Target | None = None
        # The service whose connection closed while this publisher was attached to it.
        self._closed_connection: str | None = None

    @property
    def routes(self) -> list[Route]:
        """The routes this publisher was created with."""
        return self._mapping.routes()

    @property
    def type_mapping(self) -> TypeMapping:
        return self._mapping

    def _attach(
        self,
        transport: Transport,
        destination: Destination,
        service: str,
        description: str,
        observers: Observers,
    ) -> None:
        if self._target is not None:
            raise ConfigurationError(
                f"publisher with routes {self._describe_routes()} is already attached to "
                f"{self._target.description}; create one Publisher per setup"
            )
        base: dict[str, Any] = {SERVICE_HEADER: service}
        if destination.cc:
            base[CC_HEADER] = list(destination.cc)
        by_key: dict[str, dict[str, Any]] = {}
        for route in self._mapping.routes():
            headers = by_key[route.routing_key] = {
                **base,
                **envelope_constants(service, route.routing_key),
            }
            if route.version != 1:
                headers[naming.CE_SCHEMA_VERSION] = route.version
        self._target = _Target(transport, destination, service, by_key, description, observers)
        self._closed_connection = None

    def _require_target(self) -> _Target:
        if self._target is not None:
            return self._target
        if self._closed_connection is not None:
            raise PublishError(
                f"publisher with routes {self._describe_routes()} cannot publish: its "
                f"connection {self._closed_connection!r} was closed; publish before close(), "
                "or set the publisher up on a connection that is started"
            )
        raise PublishError(
            f"publisher with routes {self._describe_routes()} is not attached to a started "
            "connection: pass event_stream_publisher(publisher) (or service_publisher, "
            "queue_publisher) to Connection.start()"
        )

    def _headers(
        self, target: _Target, key: str, headers: Mapping[str, Any] | None
    ) -> Mapping[str, Any]:
        base = target.headers_by_key[key]
        if not headers:
            return base
        check_user_headers(headers)
        sent = {**base, **headers, SERVICE_HEADER: target.service}
        if target.destination.cc and CC_HEADER in headers:
            sent[CC_HEADER] = [*target.destination.cc, *headers[CC_HEADER]]
        return sent

    def _detach(self) -> None:
        """Its connection closed: a publish now says so."""
        if self._target is not None:
            self._closed_connection = self._target.service
        self._target = None

    def _describe_routes(self) -> str:
        return ", ".join(f"{r.event_type.__name__}->{r.routing_key!r}" for r in self.routes)

    def routing_key_for(self, event: BaseModel) -> str:
        """The routing key ``event`` is published with; ConfigurationError if it has no route."""
        key = self._key_by_type.get(type(event))
        if key is not None:
            return key
        if not isinstance(event, BaseModel):
            raise ConfigurationError(
                f"cannot publish a {type(event).__name__}: an event is an instance of a pydantic "
                "model with a Route in the Publisher (dict is only for handlers that read the "
                f"raw JSON); it has {self._describe_routes() or 'none'}"
            )
        for base in type(event).__mro__[1:]:
            key = self._key_by_type.get(base)
            if key is not None:
                return key
        raise ConfigurationError(
            f"no route for {type(event).__name__}: add Route({type(event).__name__}, "
            f"'<routing key>') to the Publisher (it has {self._describe_routes() or 'none'})"
        )

    def publish(
        self,
        event: BaseModel,
        headers: Mapping[str, Any] | None = None,
        *,
        mandatory: bool | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Publish ``event``; await the result to wait for the broker's confirm.

        ``headers`` are sent as AMQP headers; ``service`` is reserved (it carries this service's
        name). With ``mandatory=True`` (the default for requests and ``queue_publisher``) a
        message that no queue is bound for raises ``Unroutable`` instead of being dropped by the
        broker. Raises ``ConfigurationError`` for a type without a route or a bad header, and
        ``PublishError`` when the broker does not confirm within the connection's
        ``publish_timeout``, reconnections included: ``PublishOutcomeUnknown`` when it may have
        stored the message anyway (a resend may duplicate it), plain ``PublishError`` when it
        refused it or never got it (a resend is safe).

        What it returns is awaited, gathered, or made a task (``asyncio.create_task``,
        ``TaskGroup``) as a coroutine is. When the connection is up, the message is written at
        once and the result is the future of its confirm (a ``PendingPublish``): gathering many
        publishes then makes no task per publish.
        """
        target = self._target
        if target is not None:
            key = self._key_by_type.get(type(event))
            if key is not None:
                pending = self._publish_now(target, key, event, headers, mandatory)
                if pending is not None:
                    return pending
        return self._publish(event, headers, mandatory=mandatory)

    def _publish_now(
        self,
        target: _Target,
        key: str,
        event: BaseModel,
        headers: Mapping[str, Any] | None,
        mandatory: bool | None,
    ) -> PendingPublish | None:
        """Write the publish on the open session now; its confirm's future, or None when it
        takes the coroutine (observed or instrumented, no open session, or something to say:
        a bad header, a frame too large; the coroutine raises it when awaited)."""
        observers = target.observers
        transport = target.transport
        session = transport.open_session
        if (
            session is None
            or observers.current is not None
            or observers.instrument is not None
            or log.isEnabledFor(logging.DEBUG)
        ):
            return None
        destination = target.destination
        try:
            loop = asyncio.get_running_loop()
            body = encode(event)
            sent = self._headers(target, key, headers)
            if mandatory is None:
                mandatory = destination.mandatory
            envelope = outgoing_envelope()
            pending = PendingPublish(
                loop, transport, session, destination, key, body, sent, mandatory, envelope
            )
            written = session.publish_now(
                destination.exchange,
                key,
                body,
                sent,
                mandatory=mandatory,
                confirm_timeout=transport.publish_timeout,
                envelope=envelope,
                waiter=pending,
            )
        except Exception:
            return None  # nothing was written: the coroutine tries again, and raises it
        return pending if written is not None else None

    async def _publish(
        self,
        event: BaseModel,
        headers: Mapping[str, Any] | None = None,
        *,
        mandatory: bool | None = None,
    ) -> None:
        """``publish`` as a coroutine: observed, instrumented, or waiting for the connection."""
        target = self._target or self._require_target()
        key = self._key_by_type.get(type(event)) or self.routing_key_for(event)
        destination = target.destination
        instrument = target.observers.instrument
        try:
            if instrument is None:
                await target.transport.publish(
                    destination.exchange,
                    key,
                    encode(event),
                    self._headers(target, key, headers),
                    mandatory=destination.mandatory if mandatory is None else mandatory,
                    envelope=outgoing_envelope(),
                )
            else:
                await publish_with(
                    instrument,
                    target.transport,
                    target.service,
                    destination.exchange,
                    key,
                    encode(event),
                    self._headers(target, key, headers),
                    mandatory=destination.mandatory if mandatory is None else mandatory,
                    envelope=outgoing_envelope(),
                )
        except Unroutable as exc:
            raise destination.unroutable(key, exc) from exc
        log.debug("%s: published %r to %r", target.service, key, destination.exchange)
        observer = target.observers.current
        if observer is not None:
            observer.published(target.service, destination.exchange, key, event)

    def _prepare(
        self, event: BaseModel, headers: Mapping[str, Any] | None = None
    ) -> PreparedPublish:
        """Everything a publish of ``event`` would send, without sending it: for the outbox,
        which stores it in the caller's transaction and publishes it later, unchanged."""
        target = self._target or self._require_target()
        key = self._key_by_type.get(type(event)) or self.routing_key_for(event)
        envelope = outgoing_envelope()
        return PreparedPublish(
            exchange=target.destination.exchange,
            routing_key=key,
            body=encode(event),
            headers={**self._headers(target, key, headers), **envelope.headers},
            message_id=envelope.message_id,
            timestamp=envelope.timestamp,
            mandatory=target.destination.mandatory,
        )

    async def publish_many(
        self,
        events: Iterable[BaseModel],
        headers: Mapping[str, Any] | None = None,
        *,
        mandatory: bool | None = None,
        max_in_flight: int = 1000,
    ) -> None:
        """Publish ``events`` pipelined, at most ``max_in_flight`` unconfirmed at a time.

        Returns once every one was confirmed. Otherwise raises ``PublishError`` after all were
        tried; its ``failures`` lists ``(event, exception)`` for each event not confirmed, with
        that event's own exception. Resend only what the broker does not have: an event whose
        exception is a ``PublishOutcomeUnknown`` may have been stored (its confirm did not come
        in time, or its connection died first), so resending it may deliver it twice; any other
        ``PublishError`` (refused, ``Unroutable``, never sent) is safe to resend.
        """
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1, got {max_in_flight}")
        failures: list[tuple[BaseModel, BaseException]] = []
        batch: list[BaseModel] = []

        async def flush() -> None:
            target = self._target
            if target is not None and target.observers.instrument is None:
                # No task per event: the transport writes them all, then awaits each confirm.
                results = await publish_batch(
                    target,
                    batch,
                    mandatory,
                    lambda event: self._key_by_type.get(type(event)) or self.routing_key_for(event),
                    lambda key: self._headers(target, key, headers),
                )
            else:
                results = await asyncio.gather(
                    *(self.publish(e, headers, mandatory=mandatory) for e in batch),
                    return_exceptions=True,
                )
            for event, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result  # cancellation and the like go through
                    failures.append((event, result))
            batch.clear()

        count = 0
        for event in events:
            batch.append(event)
            count += 1
            if len(batch) == max_in_flight:
                await flush()
        await flush()
        if failures:
            unknown = sum(isinstance(exc, PublishOutcomeUnknown) for _, exc in failures)
            raise PublishError(
                f"{len(failures)} of {count} events not confirmed ({unknown} of them with an "
                "unknown outcome: they may have been stored, a resend may duplicate them; the "
                "others were refused or never sent: safe to resend). Each event's own error "
                f"is in .failures; the first: {failures[0][1]}",
                failures=failures,
            )

    @overload
    async def request(
        self,
        event: BaseModel,
        response_type: None = None,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    @overload
    async def request(
        self,
        event: BaseModel,
        response_type: type[R],
        *,
        timeout: float = 5.0,
        headers: Mapping[str, Any] | None = None,
    ) -> R: ...

    async def request(
        self,
        event: BaseModel,
        response_type: type[Any] | None = None,
        *,
        timeout: float = 5.0,
        headers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send ``event`` as a request and wait for the response.

        Needs ``service_publisher(target, publisher, awaitable=True)``. Returns the response
        decoded into ``response_type`` (a dict of the JSON when it is None). ``timeout`` bounds
        the whole wait: for one of the ``max_pending`` slots, for the publish's confirm and for
        the response. Raises ``RequestTimeout`` when that ran out, ``Unroutable`` at once when
        no service consumes the request (the target never started, or binds no such key),
        another ``PublishError`` when the request was not confirmed, and ``RemoteError`` when
        the responder's handler raised (an amqp-events responder reports that).
        """
        target = self._target or self._require_target()
        if target.destination.pending is None:
            raise ConfigurationError(
                f"publisher with routes {self._describe_routes()} cannot await responses: set it "
                "up with service_publisher(target_service, publisher, awaitable=True)"
            )
        key = self._key_by_type.get(type(event)) or self.routing_key_for(event)
        return await send_request(
            target, key, encode(event), self._headers(target, key, headers), response_type, timeout
        )
