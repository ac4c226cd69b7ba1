"""Publish/subscribe setups: topic streams (goamqp's ``StreamPublisher``, ``StreamConsumer``,
``TransientStreamConsumer`` and their ``events`` specializations), and publishing straight to a
queue (``QueuePublisher``).

A stream is named as in goamqp: the stream ``orders`` is the topic exchange
``orders.topic.exchange``, and service S consumes it on ``orders.topic.exchange.queue.S``.
"""

from __future__ import annotations

from typing import Any

from .. import _naming as naming
from .._errors import ConfigurationError
from .._handlers import Handler, HandlerSpec
from .._publisher import Destination, Publisher
from .._retry import RetryPolicy
from ._builder import Setup, SetupBuilder, check_publisher, handler_spec

__all__ = [
    "event_stream_consumer",
    "event_stream_publisher",
    "queue_publisher",
    "stream_consumer",
    "stream_publisher",
    "transient_event_stream_consumer",
    "transient_stream_consumer",
]


def stream_publisher(stream: str, publisher: Publisher) -> Setup:
    """Publish ``publisher``'s events to the stream ``stream`` (goamqp's ``StreamPublisher``).

    Declares the topic exchange ``<stream>.topic.exchange``; ``stream`` is a name, not an
    exchange: ``stream_publisher("orders", p)`` publishes to ``orders.topic.exchange``.
    """
    _check_stream(stream, "stream_publisher")
    check_publisher(publisher)
    exchange = naming.stream_exchange(stream)

    def apply(builder: SetupBuilder) -> None:
        builder.declare_exchange(exchange, naming.TOPIC)
        builder._plan.add_publisher(
            publisher, Destination(exchange, f"stream {stream!r} ({exchange})")
        )

    return apply


def event_stream_publisher(publisher: Publisher) -> Setup:
    """Publish ``publisher``'s events to ``events.topic.exchange`` (goamqp's
    ``EventStreamPublisher``): ``stream_publisher("events", publisher)``."""
    return stream_publisher(naming.DEFAULT_STREAM, publisher)


def stream_consumer(
    stream: str,
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
    queue_suffix: str | None = None,
) -> Setup:
    """Consume ``routing_key`` (topic patterns allowed) from ``stream`` with ``handler``
    (goamqp's ``StreamConsumer``).

    Messages arrive on the service's durable queue ``<stream>.topic.exchange.queue.<service>``,
    bound to ``<stream>.topic.exchange``. The event type comes from ``event_type``, else from the
    handler's first annotation. ``retry`` overrides the connection's retry policy for this
    handler. ``queue_suffix`` (goamqp's ``AddQueueNameSuffix``) consumes on
    ``...queue.<service>-<suffix>`` instead: a second queue of the same service, e.g. for a
    second handler of a key that the first queue already consumes.
    """
    return _stream_consumer(
        stream, routing_key, handler, event_type, retry, queue_suffix, transient=False
    )


def transient_stream_consumer(
    stream: str,
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
    queue_suffix: str | None = None,
) -> Setup:
    """Like ``stream_consumer``, on an exclusive auto-delete queue of its own (goamqp's
    ``TransientStreamConsumer``): ``<stream>.topic.exchange.queue.<service>-<uuid4>``.

    Events published while the service is down are not kept for it: for caches and live views.
    """
    return _stream_consumer(
        stream, routing_key, handler, event_type, retry, queue_suffix, transient=True
    )


def event_stream_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
    queue_suffix: str | None = None,
) -> Setup:
    """Consume ``routing_key`` from the ``events`` stream (goamqp's ``EventStreamConsumer``):
    ``stream_consumer("events", ...)``, on ``events.topic.exchange.queue.<service>``."""
    return stream_consumer(
        naming.DEFAULT_STREAM,
        routing_key,
        handler,
        event_type,
        retry=retry,
        queue_suffix=queue_suffix,
    )


def transient_event_stream_consumer(
    routing_key: str,
    handler: Handler,
    event_type: Any = None,
    *,
    retry: RetryPolicy | None = None,
    queue_suffix: str | None = None,
) -> Setup:
    """``transient_stream_consumer("events", ...)`` (goamqp's ``TransientEventStreamConsumer``):
    an exclusive auto-delete queue ``events.topic.exchange.queue.<service>-<uuid4>``."""
    return transient_stream_consumer(
        naming.DEFAULT_STREAM,
        routing_key,
        handler,
        event_type,
        retry=retry,
        queue_suffix=queue_suffix,
    )


def _stream_consumer(
    stream: str,
    routing_key: str,
    handler: Handler,
    event_type: Any,
    retry: RetryPolicy | None,
    queue_suffix: str | None,
    *,
    transient: bool,
) -> Setup:
    """The one implementation behind the four stream consumers."""
    what = "transient_stream_consumer" if transient else "stream_consumer"
    _check_stream(stream, what)
    if queue_suffix is not None and (not isinstance(queue_suffix, str) or not queue_suffix):
        raise ConfigurationError(
            f"{what}: queue_suffix must be a non-empty str (or None), got {queue_suffix!r}"
        )
    spec = handler_spec(routing_key, handler, event_type, retry)
    exchange = naming.stream_exchange(stream)

    def apply(builder: SetupBuilder) -> None:
        name = naming.transient_stream_queue if transient else naming.stream_queue
        queue = name(stream, builder.service_name, queue_suffix)
        _consume(builder, exchange, queue, spec, transient=transient)

    return apply


def _consume(
    builder: SetupBuilder, exchange: str, queue: str, spec: HandlerSpec, *, transient: bool
) -> None:
    builder.declare_exchange(exchange, naming.TOPIC)
    if transient:
        builder.declare_queue(
            queue,
            durable=False,
            auto_delete=True,
            exclusive=True,
            arguments=naming.transient_queue_arguments(),
        )
    else:
        builder._plan.declare_durable_queue(queue)
    builder.bind(queue, exchange, spec.routing_key)
    builder._plan.add_handler(queue, spec, transient=transient)


def queue_publisher(publisher: Publisher, queue_name: str, *, cc: tuple[str, ...] = ()) -> Setup:
    """Send ``publisher``'s events straight to the queue ``queue_name`` (and the ``cc`` queues).

    As goamqp's ``QueuePublisher`` does, messages go through the default exchange with the
    event's routing key and the destination queues in the ``CC`` header (sender-selected
    distribution), so the consumer still dispatches by routing key. A publish that reaches no
    queue raises ``PublishError``.
    """
    check_publisher(publisher)
    for name in (queue_name, *cc):
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"queue_publisher: queue name {name!r} must be a non-empty str"
            )

    def apply(builder: SetupBuilder) -> None:
        builder._plan.add_publisher(
            publisher,
            Destination("", f"queue {queue_name!r}", cc=(queue_name, *cc), mandatory=True),
        )

    return apply


def _check_stream(stream: str, what: str) -> None:
    if not isinstance(stream, str) or not stream.strip():
        raise ConfigurationError(
            f"{what}: the stream must be a non-empty name such as 'events' (it declares "
            f"'<stream>.topic.exchange'), got {stream!r}"
        )
    if stream.endswith(".topic.exchange"):
        raise ConfigurationError(
            f"{what}: {stream!r} is an exchange name; pass the stream's name "
            f"{stream.removesuffix('.topic.exchange')!r}, as in goamqp (the exchange is "
            "'<stream>.topic.exchange')"
        )
