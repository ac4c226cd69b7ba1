"""Setups that configure the connection rather than declare anything: prefetch, retries,
concurrency, queue options, type mapping, and listeners (goamqp's ``WithPrefetchLimit``,
``WithTypeMapping``, ``CloseListener``, ``UseMessageLogger``, and our own additions)."""

from __future__ import annotations

from typing import Any

from .._errors import ConfigurationError
from .._message_log import MessageLogger
from .._retry import RetryPolicy
from .._routes import Route, TypeMapping
from .._transport._base import CloseCallback
from .._versions import Upcaster, check_upcaster
from ._builder import MAX_PREFETCH, Setup, SetupBuilder

__all__ = [
    "close_listener",
    "with_concurrency_limit",
    "with_message_logger",
    "with_prefetch_limit",
    "with_queue_options",
    "with_retry_policy",
    "with_type_mapping",
    "with_upcaster",
]


def with_prefetch_limit(limit: int) -> Setup:
    """How many unacknowledged messages each consumer may hold (goamqp's default: 20)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PREFETCH:
        raise ConfigurationError(
            f"with_prefetch_limit({limit!r}): the limit must be an int from 1 to {MAX_PREFETCH}"
        )

    def apply(builder: SetupBuilder) -> None:
        builder._plan.prefetch = limit

    return apply


def with_retry_policy(policy: RetryPolicy) -> Setup:
    """The retry policy of every handler of this connection that does not set its own.

    Default: ``RetryPolicy(attempts=3, delays=(1.0, 10.0))``.
    """
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(f"with_retry_policy takes a RetryPolicy, got {policy!r}")

    def apply(builder: SetupBuilder) -> None:
        builder._plan.retry_policy = policy

    return apply


def with_concurrency_limit(limit: int) -> Setup:
    """At most ``limit`` handlers of this connection run at once (prefetch bounds each queue)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(
            f"with_concurrency_limit({limit!r}): the limit must be an int >= 1"
        )

    def apply(builder: SetupBuilder) -> None:
        builder._plan.concurrency_limit = limit

    return apply


def with_queue_options(
    *,
    quorum: bool = False,
    single_active_consumer: bool = False,
    max_length: int | None = None,
    overflow: str = "reject-publish",
) -> Setup:
    """Extra arguments for this service's durable queues. NOT goamqp-compatible.

    A goamqp service declares the same queue without them, and RabbitMQ refuses a queue
    declared with other arguments (PRECONDITION_FAILED): use these only where no goamqp service
    declares the queue, and on a fresh queue (delete the old one first).

    - ``quorum``: a replicated quorum queue (``x-queue-type: quorum``);
    - ``single_active_consumer``: one consumer at a time gets messages, others stand by;
    - ``max_length`` with ``overflow``: at most that many messages; ``"reject-publish"`` (the
      default) or ``"reject-publish-dlx"`` makes further publishes fail with ``PublishError``
      instead of growing the queue. ``"drop-head"`` is refused: it discards the oldest
      messages silently. A queue with ``max_length`` is refused at start if any of its handlers
      can retry (a ``RetryPolicy`` with ``attempts > 1``, the connection's default included):
      retries come back by broker dead-lettering, which a full queue drops silently.
    """
    arguments: dict[str, Any] = {}
    if quorum:
        arguments["x-queue-type"] = "quorum"
    if single_active_consumer:
        arguments["x-single-active-consumer"] = True
    if max_length is not None:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ConfigurationError(f"with_queue_options: max_length {max_length!r} must be >= 1")
        if overflow == "drop-head":
            raise ConfigurationError(
                "with_queue_options: overflow 'drop-head' discards the oldest messages of a "
                "full queue silently; use 'reject-publish' (the default), which makes "
                "publishers see PublishError instead"
            )
        if overflow not in ("reject-publish", "reject-publish-dlx"):
            raise ConfigurationError(
                f"with_queue_options: overflow {overflow!r} must be 'reject-publish' or "
                "'reject-publish-dlx'"
            )
        arguments["x-max-length"] = max_length
        arguments["x-overflow"] = overflow

    def apply(builder: SetupBuilder) -> None:
        builder._plan.queue_arguments.update(arguments)

    return apply


def with_type_mapping(*routes: Route) -> Setup:
    """Routing key <-> type pairs used to decode events for handlers annotated with a union."""
    mapping = TypeMapping(routes)

    def apply(builder: SetupBuilder) -> None:
        builder._plan.type_mapping.merge(mapping)

    return apply


def with_upcaster(routing_key: str, from_version: int, upcaster: Upcaster) -> Setup:
    """Turn events with ``routing_key`` of version ``from_version`` into version
    ``from_version + 1`` before they are decoded: ``upcaster(dict) -> dict`` on the JSON object.

    An older event runs through every upcaster from its version up to the version this
    connection's ``Route`` for the key has (``Route(OrderCreated, "Order.Created",
    version=3)``), in order; a step without one reads the event as it is (a compatible change,
    an added optional field). An upcaster that raises dead-letters the event as
    ``undecodable``; an event newer than the route goes to the DLQ as ``version-too-new``.
    """
    check_upcaster(routing_key, from_version, upcaster)

    def apply(builder: SetupBuilder) -> None:
        steps = builder._plan.upcasters.setdefault(routing_key, {})
        if from_version in steps:
            raise ConfigurationError(
                f"with_upcaster({routing_key!r}, {from_version}) is set up twice; one upcaster "
                "per key and version"
            )
        steps[from_version] = upcaster

    return apply


def close_listener(callback: CloseCallback) -> Setup:
    """Call ``callback(exc)`` when the connection is lost (with the error) or closed (None)."""
    if not callable(callback):
        raise ConfigurationError(f"close_listener needs a callable, got {callback!r}")

    def apply(builder: SetupBuilder) -> None:
        builder.on_close(callback)

    return apply


def with_message_logger(callback: MessageLogger) -> Setup:
    """Call ``callback(message)`` with a ``LoggedMessage`` for each message this connection
    publishes, receives or dead-letters: for debugging (goamqp's ``UseMessageLogger``).

    ``message.direction`` is ``"out"`` after the broker confirmed a publish, ``"in"`` when a
    message arrives (decoded, before its handler runs; each retry again), ``"dead-lettered"``
    when a message went to its dead-letter queue. The callback runs inline on the message's
    path: keep it quick (e.g. ``log.debug``). An exception it raises is logged, never passed
    on. Without a message logger, a message costs two None checks. For Python's own logging,
    amqp-events logs with ``logging.getLogger(__name__)`` loggers under ``amqp_events``
    (goamqp's ``UseLogger``): configure those.
    """
    if not callable(callback):
        raise ConfigurationError(f"with_message_logger needs a callable, got {callback!r}")

    def apply(builder: SetupBuilder) -> None:
        builder._plan.message_loggers.append(callback)

    return apply
