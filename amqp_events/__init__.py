"""amqp-events: event-driven services on RabbitMQ, wire-compatible with goamqp.

The public API is exactly ``__all__`` (and the ``testing`` package); every other module is
private. The path of a message, module by module:

- setting up: ``_connection`` (the lifecycle) runs the setup functions of ``_setup``
  (``_streams``, ``_services``, ``_options``) on a ``SetupBuilder`` (``_setup/_builder``);
  ``_event_router`` holds the decorated handlers; ``_naming`` names exchanges, queues and
  headers; ``_topology`` is what gets declared;
- publishing: ``_publisher`` (type -> key by ``_routes``, ``_codec`` to JSON, ``_headers``
  checked, ``_envelope`` added; ``_pending_publish``, the confirm's future of a publish written
  at once; ``_publish_batch``, ``publish_many``'s windows) -> ``_transport``
  (``_reconnecting`` over ``_amqp`` for RabbitMQ, or ``memory``, the in-process broker;
  ``_wire`` says what AMQP can carry) -> the broker;
- consuming: the transport -> ``_dispatch`` (key -> handler by ``_topics`` matching and
  ``_handlers``, decode, call, ack; ``_inflight`` for shutdown) -> on failure ``_failures``
  (retry and dead-letter moves, by the ``_retry`` policy);
- service to service: ``_requests`` (the responder and awaited requests),
  ``_request_round_trip`` (one awaited request);
- seeing what happens: ``_observe`` (observers), ``_message_log`` (a message logger),
  ``_instrument`` (the seam for metrics and tracing: ``_metrics`` for Prometheus,
  ``_tracing`` for OpenTelemetry, both optional extras, set up by ``_setup/_instruments``);
  ``_errors`` draws the exception tree; ``_cli`` and ``_demo`` are the command line.
"""

from . import _version
from ._connection import Connection
from ._envelope import MessageContextFilter
from ._errors import (
    Ack,
    AmqpEventsError,
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    ConsumerLost,
    DecodeError,
    Drop,
    HandlerControl,
    PublishError,
    PublishOutcomeUnknown,
    ReconnectFailed,
    Reject,
    RemoteError,
    RequestTimeout,
    Retry,
    Unroutable,
)
from ._event_router import EventRouter
from ._headers import Headers
from ._message_log import LoggedMessage
from ._metadata import Metadata
from ._publisher import Publisher
from ._retry import RetryPolicy
from ._routes import Route
from ._setup import (
    Setup,
    SetupBuilder,
    close_listener,
    event_stream_consumer,
    event_stream_publisher,
    queue_publisher,
    request_response_handler,
    serve_metrics,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
    stream_consumer,
    stream_publisher,
    transient_event_stream_consumer,
    transient_stream_consumer,
    with_concurrency_limit,
    with_message_logger,
    with_prefetch_limit,
    with_prometheus,
    with_queue_options,
    with_retry_policy,
    with_tracing,
    with_type_mapping,
    with_upcaster,
)
from ._transport.memory import MemoryBroker

__version__: str = _version.VERSION  # the installed version; by convention not in __all__

__all__ = [
    "Ack",
    "AmqpEventsError",
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "Connection",
    "ConsumerLost",
    "DecodeError",
    "Drop",
    "EventRouter",
    "HandlerControl",
    "Headers",
    "LoggedMessage",
    "MemoryBroker",
    "MessageContextFilter",
    "Metadata",
    "PublishError",
    "PublishOutcomeUnknown",
    "Publisher",
    "ReconnectFailed",
    "Reject",
    "RemoteError",
    "RequestTimeout",
    "Retry",
    "RetryPolicy",
    "Route",
    "Setup",
    "SetupBuilder",
    "Unroutable",
    "close_listener",
    "event_stream_consumer",
    "event_stream_publisher",
    "queue_publisher",
    "request_response_handler",
    "serve_metrics",
    "service_publisher",
    "service_request_consumer",
    "service_response_consumer",
    "stream_consumer",
    "stream_publisher",
    "transient_event_stream_consumer",
    "transient_stream_consumer",
    "with_concurrency_limit",
    "with_message_logger",
    "with_prefetch_limit",
    "with_prometheus",
    "with_queue_options",
    "with_retry_policy",
    "with_tracing",
    "with_type_mapping",
    "with_upcaster",
]
