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
