"""Every name and declaration argument, as a table: these must match goamqp exactly."""

from __future__ import annotations

import re

import pytest

from amqp_events import _naming as naming


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (naming.DEFAULT_EVENT_EXCHANGE, "events.topic.exchange"),
        (naming.event_stream_queue("stat"), "events.topic.exchange.queue.stat"),
        (naming.event_stream_queue("stat", "custom"), "custom.queue.stat"),
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


def test_transient_queue_is_service_queue_plus_uuid() -> None:
    name = naming.transient_event_stream_queue("stat")
    assert re.fullmatch(r"events\.topic\.exchange\.queue\.stat-[0-9a-f-]{36}", name)
    assert name != naming.transient_event_stream_queue("stat")


def test_connection_name_like_goamqp() -> None:
    assert re.fullmatch(r"stat#1\.2#@.+", naming.connection_name("stat", "1.2"))
