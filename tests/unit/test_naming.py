"""Every name and declaration argument, as a table: these must match goamqp exactly."""

from __future__ import annotations

import re

import pytest

from amqp_events import _naming as naming


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (naming.DEFAULT_STREAM, "events"),
        (naming.DEFAULT_EVENT_EXCHANGE, "events.topic.exchange"),
        # goamqp's StreamPublisher/StreamConsumer take a stream *name*
        (naming.stream_exchange("events"), "events.topic.exchange"),
        (naming.stream_exchange("orders"), "orders.topic.exchange"),
        (naming.stream_queue("events", "stat"), "events.topic.exchange.queue.stat"),
        (naming.stream_queue("orders", "stat"), "orders.topic.exchange.queue.stat"),
        # goamqp's AddQueueNameSuffix: "<queue>-<suffix>"
        (naming.stream_queue("events", "stat", "audit"), "events.topic.exchange.queue.stat-audit"),
        (naming.stream_queue("orders", "stat", "v2"), "orders.topic.exchange.queue.stat-v2"),
        (naming.request_exchange("billing"), "billing.direct.exchange.request"),
        (naming.request_queue("billing"), "billing.direct.exchange.request.queue"),
        (naming.response_exchange("billing"), "billing.headers.exchange.response"),
        (
            naming.response_queue("billing", "orders"),
            "billing.headers.exchange.response.queue.orders",
        ),
        (naming.durable_queue_arguments(), {"x-expires": 432000000}),
        (naming.transient_queue_arguments(), {"x-expires": 432000000}),
        (naming.DEFAULT_PREFETCH, 20),
        (naming.HEARTBEAT_SECONDS, 10),
        (naming.SERVICE_HEADER, "service"),
        (naming.CC_HEADER, "CC"),
        (naming.BCC_HEADER, "BCC"),
        (naming.BROKER_HEADER_PREFIX, "x-"),
        (naming.ROUTING_KEY_HEADER, "amqp-events-routing-key"),
        (naming.EXCHANGE_HEADER, "amqp-events-exchange"),
        (naming.ATTEMPT_HEADER, "amqp-events-attempt"),
        (naming.REDELIVERIES_HEADER, "amqp-events-redeliveries"),
        (naming.DROPPED_HEADERS_HEADER, "amqp-events-dropped-headers"),
        (naming.DEAD_REASON_HEADER, "amqp-events-dead-reason"),
        (naming.DEAD_QUEUE_HEADER, "amqp-events-dead-queue"),
        (naming.DEAD_SERVICE_HEADER, "amqp-events-dead-service"),
        (naming.DEAD_AT_HEADER, "amqp-events-dead-at"),
        (naming.EXCEPTION_TYPE_HEADER, "amqp-events-exception-type"),
        (naming.EXCEPTION_MESSAGE_HEADER, "amqp-events-exception-message"),
        (naming.ERROR_HEADER, "amqp-events-error"),
        (naming.ERROR_TYPE_HEADER, "amqp-events-error-type"),
        (naming.CONTENT_TYPE_JSON, "application/json"),
        (naming.DELIVERY_MODE_PERSISTENT, 2),
    ],
)
def test_wire_names(actual: object, expected: object) -> None:
    assert actual == expected


@pytest.mark.parametrize(
    ("stream", "suffix", "pattern"),
    [
        ("events", None, r"events\.topic\.exchange\.queue\.stat-{uuid}"),
        ("orders", None, r"orders\.topic\.exchange\.queue\.stat-{uuid}"),
        ("orders", "live", r"orders\.topic\.exchange\.queue\.stat-{uuid}-live"),
    ],
)
def test_transient_queue_is_service_queue_plus_uuid(
    stream: str, suffix: str | None, pattern: str
) -> None:
    name = naming.transient_stream_queue(stream, "stat", suffix)
    assert re.fullmatch(pattern.format(uuid="[0-9a-f-]{36}"), name)
    assert name != naming.transient_stream_queue(stream, "stat", suffix)


def test_connection_name_like_goamqp() -> None:
    assert re.fullmatch(r"stat#1\.2#@.+", naming.connection_name("stat", "1.2"))


def test_every_library_header_carries_the_reserved_prefix() -> None:
    """Users may not send these (check_user_headers refuses the prefix), so they stay ours."""
    ours = [
        value
        for name, value in vars(naming).items()
        if name.endswith("_HEADER") and name not in ("SERVICE_HEADER", "CC_HEADER", "BCC_HEADER")
    ]
    assert ours
    assert all(value.startswith(naming.HEADER_PREFIX) for value in ours)
