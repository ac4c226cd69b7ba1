"""The public API is exactly what the README documents; nothing grows by accident."""

from __future__ import annotations

import inspect
import pkgutil

import amqp_events

DOCUMENTED = {
    "Ack",
    "AmqpEventsError",
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "ConsumerLost",
    "Connection",
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
}


def test_all_is_the_documented_set() -> None:
    assert set(amqp_events.__all__) == DOCUMENTED
    assert len(amqp_events.__all__) == len(DOCUMENTED)


def test_every_public_name_has_a_docstring() -> None:
    for name in amqp_events.__all__:
        obj = getattr(amqp_events, name)
        if name == "Setup":  # a type alias
            continue
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_every_exception_derives_from_the_root() -> None:
    for name in amqp_events.__all__:
        obj = getattr(amqp_events, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, amqp_events.AmqpEventsError), name


def test_implementation_modules_are_private() -> None:
    public = {"testing", "outbox"}
    for module in pkgutil.iter_modules(amqp_events.__path__):
        assert module.name.startswith("_") or module.name in public, module.name
