"""amqp-events: event-driven services on RabbitMQ, wire-compatible with goamqp.

The public API is exactly ``__all__``; every other module is private.
"""

from ._connection import Connection
from ._errors import (
    AmqpEventsError,
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    DecodeError,
    PublishError,
    ReconnectFailed,
    RemoteError,
    RequestTimeout,
)
from ._headers import Headers
from ._publisher import Publisher
from ._router import EventRouter
from ._routing import Route
from ._setup import (
    Setup,
    close_listener,
    event_stream_consumer,
    event_stream_publisher,
    queue_publisher,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
    transient_event_stream_consumer,
    with_prefetch_limit,
    with_type_mapping,
)
from .transports._memory import MemoryBroker

__all__ = [
    "AmqpEventsError",
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "Connection",
    "DecodeError",
    "EventRouter",
    "Headers",
    "MemoryBroker",
    "PublishError",
    "Publisher",
    "ReconnectFailed",
    "RemoteError",
    "RequestTimeout",
    "Route",
    "Setup",
    "close_listener",
    "event_stream_consumer",
    "event_stream_publisher",
    "queue_publisher",
    "service_publisher",
    "service_request_consumer",
    "service_response_consumer",
    "transient_event_stream_consumer",
    "with_prefetch_limit",
    "with_type_mapping",
]
