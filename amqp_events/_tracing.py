"""OpenTelemetry tracing of a connection (``with_tracing``): an ``Instrument`` that makes spans.

Imported only by ``with_tracing`` (opentelemetry-api is an optional extra). Per OpenTelemetry's
messaging semantic conventions for RabbitMQ:

- a PRODUCER span per publish, ``publish <exchange>:<routing key>``, whose context goes into
  the message's headers (``traceparent``, ``tracestate``, ``baggage``: whatever the global
  propagator writes);
- a CONSUMER span per delivery, ``process <exchange>:<registered key>:<queue>``, the child of
  the context its headers carry, current while the handler runs: the handler's own spans and
  the PRODUCER spans of what it publishes are its children;
- a retry or a dead letter is an event on the CONSUMER span; the handler's exception is
  recorded on it. Never a payload.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import Token
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from . import _naming as naming
from ._envelope import (
    PROPAGATION_MAX_BYTES,
    PROPAGATION_MAX_HEADERS,
    Envelope,
    correlation_of,
    message_id_of,
)
from ._errors import Ack, Drop
from ._instrument import DEAD_LETTERED, REQUEUED, RETRIED
from ._transport._base import Delivery

__all__ = ["TracingInstrument", "consumer_destination", "producer_destination"]

log = logging.getLogger(__name__)

SYSTEM: Final = "rabbitmq"
DEFAULT_EXCHANGE: Final = "amq.default"


def producer_destination(exchange: str, routing_key: str) -> str:
    """``messaging.destination.name`` of a publish: ``{exchange}:{routing key}``, empty parts
    left out (``amq.default`` when both are)."""
    return ":".join(p for p in (exchange, routing_key) if p) or DEFAULT_EXCHANGE


def consumer_destination(exchange: str, routing_key: str, queue: str) -> str:
    """``messaging.destination.name`` of a delivery: ``{exchange}:{routing key}:{queue}``,
    empty parts left out, the queue once when the key is the queue's name."""
    parts = [exchange, routing_key] if routing_key != queue else [exchange]
    return ":".join(p for p in (*parts, queue) if p) or DEFAULT_EXCHANGE


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads propagation fields from AMQP headers (text, or bytes as some clients send)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_getter: Final = _HeaderGetter()


class TracingInstrument:
    """Spans for what one connection publishes and consumes."""

    __slots__ = ("_server", "_tracer")

    def __init__(self, tracer: Tracer, server: dict[str, Any]) -> None:
        self._tracer = tracer
        self._server = server  # server.address, server.port

    def publishing(
        self, service: str, exchange: str, routing_key: str, envelope: Envelope | None, size: int
    ) -> _PublishSpan:
        destination = producer_destination(exchange, routing_key)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "publish",
            "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            "messaging.message.body.size": size,
            **self._server,
        }
        if routing_key:
            attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
        if envelope is not None:
            attributes["messaging.message.id"] = envelope.message_id
            conversation = envelope.headers.get(naming.CE_CORRELATION_ID)
            if isinstance(conversation, str):
                attributes["messaging.message.conversation_id"] = conversation
        # A message written to the outbox carries the context it was written in: its publish
        # span, made later by the relay, continues that trace.
        parent = (
            propagate.extract(envelope.headers, getter=_getter)
            if envelope is not None
            and not propagate.get_global_textmap().fields.isdisjoint(envelope.headers)
            else None
        )
        span = self._tracer.start_span(
            f"publish {destination}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        if envelope is not None:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            if carrier:
                envelope.headers = {**envelope.headers, **_bounded(carrier)}
        return _PublishSpan(span)

    def deferred(self, headers: Mapping[str, Any]) -> Mapping[str, Any]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {**headers, **_bounded(carrier)} if carrier else headers

    def consuming(
        self, service: str, queue: str, pattern: str, routing_key: str, delivery: Delivery
    ) -> _ConsumeSpan:
        parent = propagate.extract(delivery.headers, getter=_getter)
        exchange = delivery.exchange
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": consumer_destination(exchange, routing_key, queue),
            "messaging.destination.subscription.name": queue,
            "messaging.message.body.size": len(delivery.body),
            **self._server,
        }
        if routing_key:
            attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
        # The span name keeps to the handler's registered key: bounded, whatever keys arrive.
        template = consumer_destination(exchange, pattern, queue)
        attributes["messaging.destination.template"] = template
        message_id = message_id_of(delivery)
        if message_id is not None:
            attributes["messaging.message.id"] = message_id
        conversation = correlation_of(delivery.headers)
        if conversation is not None:
            attributes["messaging.message.conversation_id"] = conversation
        span = self._tracer.start_span(
            f"process {template}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return _ConsumeSpan(span, token)

    def connection_lost(self, service: str) -> None:
        pass  # a metric, not a span

    def pending_requests(self, service: str, target: str, delta: int) -> None:
        pass  # the request's PRODUCER span and its response's CONSUMER span tell it


def _fail(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))


class _PublishSpan:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def finished(self, outcome: str, exc: BaseException | None) -> None:
        span = self._span
        span.set_attribute("amqp_events.outcome", outcome)
        if exc is not None:
            span.record_exception(exc)
            _fail(span, exc)
        span.end()


class _ConsumeSpan:
    __slots__ = ("_recorded", "_span", "_token")

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self._span = span
        self._token = token
        self._recorded: BaseException | None = None

    def handler_started(self) -> None:
        pass

    def handler_finished(self, exc: BaseException | None) -> None:
        if exc is not None and not isinstance(exc, Ack | Drop):
            self._span.record_exception(exc)
            self._recorded = exc

    def moved(self, outcome: str, reason: str, cause: BaseException | str | None) -> None:
        span = self._span
        if isinstance(cause, BaseException) and cause is not self._recorded:
            span.record_exception(cause)
            self._recorded = cause
        if outcome == RETRIED:
            span.add_event("amqp_events.retry", {"amqp_events.retry.queue": reason})
        elif outcome == DEAD_LETTERED:
            attributes = {"amqp_events.dead_letter.reason": reason}
            if isinstance(cause, str):
                attributes["amqp_events.dead_letter.cause"] = cause[:1000]
            span.add_event("amqp_events.dead_letter", attributes)
            span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {reason}"))
            if isinstance(cause, BaseException):
                span.set_attribute("error.type", type(cause).__qualname__)
        elif outcome == REQUEUED:
            span.add_event("amqp_events.redelivery_counted")

    def finished(self, outcome: str, reason: str) -> None:
        span = self._span
        span.set_attribute("amqp_events.outcome", outcome)
        otel_context.detach(self._token)
        span.end()


def _bounded(carrier: dict[str, str]) -> dict[str, str]:
    """What the propagator wrote, within what the envelope may add to a header frame
    (``PROPAGATION_MAX_BYTES``): baggage and tracestate can grow without limit, and a header
    frame over frame_max would close the connection. What does not fit is left out."""
    kept: dict[str, str] = {}
    room = PROPAGATION_MAX_BYTES
    # Smallest first: traceparent (55 bytes) always fits; a huge baggage is what goes.
    for name, value in sorted(carrier.items(), key=lambda item: len(item[1])):
        size = len(name.encode()) + len(value.encode())
        if len(kept) < PROPAGATION_MAX_HEADERS and size <= room and len(name) <= 32:
            kept[name] = value
            room -= size
        else:
            log.debug("trace context header %r (%d bytes) left out: over the bound", name, size)
    return kept
