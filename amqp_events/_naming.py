"""Every exchange, queue and header name and every declaration argument, in one place.

These are goamqp's rules (see the README's "Wire rules"): a Go service using goamqp and a Python
service using amqp-events declare the same names with the same arguments, or RabbitMQ refuses the
second declaration with PRECONDITION_FAILED.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any, Final

# goamqp's default stream: EventStreamPublisher is StreamPublisher("events", ...).
DEFAULT_STREAM: Final = "events"

# x-expires on every service queue: 5 days in ms, exactly as goamqp declares it.
QUEUE_EXPIRES_MS: Final = 432_000_000

DEFAULT_PREFETCH: Final = 20
HEARTBEAT_SECONDS: Final = 10

CONTENT_TYPE_JSON: Final = "application/json"
DELIVERY_MODE_PERSISTENT: Final = 2

# Every header name amqp-events reads or writes is defined in this module.
# The publishing service's name (goamqp routes responses by it).
SERVICE_HEADER: Final = "service"
# RabbitMQ's sender-selected distribution: extra destination queues of one publish.
CC_HEADER: Final = "CC"
BCC_HEADER: Final = "BCC"
# RabbitMQ owns headers starting with this (x-death, x-delivery-count ...; 3.13+ sets them only
# itself): never copied into a republish, never read as routing or counting input.
BROKER_HEADER_PREFIX: Final = "x-"

# CloudEvents 1.0 attributes in binary content mode. We write the prefix gomessaging (goamqp's
# successor) writes on AMQP, the CloudEvents AMQP binding's; we read all three in use.
CE_PREFIX: Final = "cloudEvents:"
CE_READ_PREFIXES: Final = ("cloudEvents:", "cloudEvents_", "ce-")
CE_ID: Final = "cloudEvents:id"
CE_SOURCE: Final = "cloudEvents:source"
CE_TYPE: Final = "cloudEvents:type"
CE_TIME: Final = "cloudEvents:time"
CE_SPECVERSION: Final = "cloudEvents:specversion"
CE_DATACONTENTTYPE: Final = "cloudEvents:datacontenttype"
CE_CORRELATION_ID: Final = "cloudEvents:correlationid"  # extension: the conversation
CE_CAUSATION_ID: Final = "cloudEvents:causationid"  # extension: the message that caused it
CE_SCHEMA_VERSION: Final = (
    "cloudEvents:schemaversion"  # extension: the event's version, 1 if absent
)
CE_SPECVERSION_VALUE: Final = "1.0"

TOPIC: Final = "topic"
DIRECT: Final = "direct"
HEADERS: Final = "headers"


def stream_exchange(stream: str) -> str:
    """The topic exchange of the stream ``stream``: ``<stream>.topic.exchange``."""
    return f"{stream}.{TOPIC}.exchange"


DEFAULT_EVENT_EXCHANGE: Final = stream_exchange(DEFAULT_STREAM)  # "events.topic.exchange"


def stream_queue(stream: str, service: str, suffix: str | None = None) -> str:
    """The durable queue of ``service`` on ``stream``: ``<stream>.topic.exchange.queue.<service>``.

    With goamqp's ``AddQueueNameSuffix(suffix)``: ``...queue.<service>-<suffix>``.
    """
    return _suffixed(f"{stream_exchange(stream)}.queue.{service}", suffix)


def transient_stream_queue(stream: str, service: str, suffix: str | None = None) -> str:
    """A fresh name for a transient (exclusive, auto-delete) queue of ``service`` on ``stream``:
    ``<stream>.topic.exchange.queue.<service>-<uuid4>`` (then ``-<suffix>``, as goamqp)."""
    return _suffixed(f"{stream_exchange(stream)}.queue.{service}-{uuid.uuid4()}", suffix)


def _suffixed(queue: str, suffix: str | None) -> str:
    return queue if suffix is None else f"{queue}-{suffix}"


def request_exchange(service: str) -> str:
    return f"{service}.direct.exchange.request"


def request_queue(service: str) -> str:
    return f"{request_exchange(service)}.queue"


def response_exchange(service: str) -> str:
    return f"{service}.headers.exchange.response"


def response_queue(target: str, caller: str) -> str:
    return f"{response_exchange(target)}.queue.{caller}"


def retry_queue(queue: str, delay_ms: int) -> str:
    """The delay queue that holds ``queue``'s failed messages for ``delay_ms`` before retrying."""
    return f"{queue}.retry.{delay_ms}"


def dead_letter_queue(queue: str) -> str:
    """Where ``queue``'s messages go when they cannot be handled."""
    return f"{queue}.dlq"


def retry_queue_arguments(queue: str, delay_ms: int) -> dict[str, Any]:
    """Hold messages ``delay_ms``, then dead-letter them back to ``queue`` (default exchange)."""
    return {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
    }


# Headers amqp-events sets on retried and dead-lettered messages. RabbitMQ owns "x-" headers and
# has changed how it fills them, so ours carry everything the library needs.
HEADER_PREFIX: Final = "amqp-events-"
ROUTING_KEY_HEADER: Final = "amqp-events-routing-key"
EXCHANGE_HEADER: Final = "amqp-events-exchange"
ATTEMPT_HEADER: Final = "amqp-events-attempt"
# How often the message came back unsettled (its consumer died): bounds handlers that kill
# their process, which no attempt count can see.
REDELIVERIES_HEADER: Final = "amqp-events-redeliveries"
# Names of foreign headers left out of a dead letter so that it fits the broker's frame_max.
DROPPED_HEADERS_HEADER: Final = "amqp-events-dropped-headers"
DEAD_REASON_HEADER: Final = "amqp-events-dead-reason"
DEAD_QUEUE_HEADER: Final = "amqp-events-dead-queue"
DEAD_SERVICE_HEADER: Final = "amqp-events-dead-service"
DEAD_AT_HEADER: Final = "amqp-events-dead-at"
EXCEPTION_TYPE_HEADER: Final = "amqp-events-exception-type"
EXCEPTION_MESSAGE_HEADER: Final = "amqp-events-exception-message"
# Between amqp-events services only: a responder whose handler raised says so in these headers
# of its response, so the caller gets the error at once instead of a timeout.
ERROR_HEADER: Final = "amqp-events-error"
ERROR_TYPE_HEADER: Final = "amqp-events-error-type"


def durable_queue_arguments() -> dict[str, Any]:
    """Arguments of every durable service queue: only x-expires, exactly as goamqp declares."""
    return {"x-expires": QUEUE_EXPIRES_MS}


def transient_queue_arguments() -> dict[str, Any]:
    return {"x-expires": QUEUE_EXPIRES_MS}


def connection_name(service: str, version: str) -> str:
    """``<service>#<version>#@<hostname>``, as goamqp names its connections for operators."""
    return f"{service}#{version}#@{socket.gethostname()}"
