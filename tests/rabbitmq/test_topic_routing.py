"""Our topic matcher against RabbitMQ's own routing of the same patterns and keys."""

from __future__ import annotations

import uuid

import aio_pika
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amqp_events._topics import topic_matches
from tests.unit.test_routing import WIRE_CASES, keys, patterns


async def broker_routing(
    url: str, pattern_list: list[str], key_list: list[str]
) -> set[tuple[int, int]]:
    """(pattern index, key index) pairs that RabbitMQ routed."""
    routed: set[tuple[int, int]] = set()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"topic-{uuid.uuid4()}", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queues = []
        for pattern in pattern_list:
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange, pattern)
            queues.append(queue)
        for k, key in enumerate(key_list):
            await exchange.publish(aio_pika.Message(str(k).encode()), key)
        for p, queue in enumerate(queues):
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                routed.add((p, int(message.body)))
    return routed


def our_routing(pattern_list: list[str], key_list: list[str]) -> set[tuple[int, int]]:
    return {
        (p, k)
        for p, pattern in enumerate(pattern_list)
        for k, key in enumerate(key_list)
        if topic_matches(pattern, key)
    }


async def test_wire_table_on_the_broker(amqp_events_rabbitmq_vhost_url: str) -> None:
    pattern_list = [p for p, _, _ in WIRE_CASES]
    key_list = [k for _, k, _ in WIRE_CASES]
    expected = {(i, i) for i, (_, _, match) in enumerate(WIRE_CASES) if match}
    diagonal = {
        (p, k)
        for p, k in await broker_routing(amqp_events_rabbitmq_vhost_url, pattern_list, key_list)
        if p == k
    }
    assert diagonal == expected


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(patterns, min_size=1, max_size=8, unique=True), st.lists(keys, min_size=1, max_size=12)
)
async def test_generated_patterns_route_like_rabbitmq(
    amqp_events_rabbitmq_vhost_url: str, pattern_list: list[str], key_list: list[str]
) -> None:
    assert our_routing(pattern_list, key_list) == await broker_routing(
        amqp_events_rabbitmq_vhost_url, pattern_list, key_list
    )
