"""Setup functions, each a goamqp counterpart: the list of them, by job.

- ``_builder``: the ``SetupBuilder`` that every setup fills in, and the ``Setup`` type;
- ``_streams``: topic streams and the queue publisher (publish/subscribe);
- ``_services``: requests and responses between services;
- ``_options``: prefetch, retries, concurrency, queue options, type mapping, listeners;
- ``_instruments``: metrics and tracing (optional extras), and a metrics endpoint.

A setup only records what to declare and consume; ``Connection.start`` applies every setup to a
builder, checks the whole result, and only then touches the broker.
"""

from __future__ import annotations

from ._builder import Setup, SetupBuilder
from ._instruments import serve_metrics, with_prometheus, with_tracing
from ._options import (
    close_listener,
    with_concurrency_limit,
    with_message_logger,
    with_prefetch_limit,
    with_queue_options,
    with_retry_policy,
    with_type_mapping,
    with_upcaster,
)
from ._services import (
    request_response_handler,
    service_publisher,
    service_request_consumer,
    service_response_consumer,
)
from ._streams import (
    event_stream_consumer,
    event_stream_publisher,
    queue_publisher,
    stream_consumer,
    stream_publisher,
    transient_event_stream_consumer,
    transient_stream_consumer,
)

__all__ = [
    "Setup",
    "SetupBuilder",
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
