"""Generated topic topologies route the same on RabbitMQ and on the memory broker."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .driver import AmqpDriver, Driver, MemoryDriver

# Small alphabets, so that patterns and keys meet often; empty words included.
pattern_words = st.sampled_from(["a", "b", "", "*", "#"])
key_words = st.sampled_from(["a", "b", ""])
patterns = st.lists(pattern_words, max_size=3).map(".".join)
keys = st.lists(key_words, max_size=3).map(".".join)
topologies = st.lists(st.lists(patterns, min_size=1, max_size=3), min_size=1, max_size=4)


async def route(driver: Driver, topology: list[list[str]], key_list: list[str]) -> Any:
    """For each queue (bound with its patterns), the indexes of the keys it received."""
    prefix = f"gen-{uuid.uuid4().hex[:8]}"
    exchange = f"{prefix}-x"
    await driver.declare_exchange(exchange, "topic", auto_delete=True)
    for q, queue_patterns in enumerate(topology):
        await driver.declare_queue(f"{prefix}-q{q}", exclusive=True)
        for pattern in queue_patterns:
            await driver.bind(f"{prefix}-q{q}", exchange, pattern)
    for k, key in enumerate(key_list):
        await driver.publish(exchange, key, str(k))
    return [
        [int(msg.body) for msg in await driver.drain(f"{prefix}-q{q}")]
        for q in range(len(topology))
    ]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(topologies, st.lists(keys, min_size=1, max_size=8))
async def test_generated_topic_topologies_route_alike(
    differential_url: str, topology: list[list[str]], key_list: list[str]
) -> None:
    async with AmqpDriver(differential_url) as driver:
        rabbitmq = await route(driver, topology, key_list)
    async with MemoryDriver() as driver:
        memory = await route(driver, topology, key_list)
    assert memory == rabbitmq


# Headers: few names (one an x- name) and values of several types that look alike.
header_names = st.sampled_from(["a", "b", "x-c"])
header_values = st.sampled_from([1, 2, "1", True, 1.5, None, 300, -1])
x_match = st.sampled_from([None, "all", "any", "all-with-x", "any-with-x"])


@st.composite
def binding_arguments(draw: st.DrawFn) -> dict[str, Any]:
    arguments: dict[str, Any] = draw(st.dictionaries(header_names, header_values, max_size=3))
    mode = draw(x_match)
    if mode is not None:
        arguments["x-match"] = mode
    return arguments


message_headers = st.dictionaries(
    header_names, header_values.filter(lambda value: value is not None), max_size=3
)


async def match(
    driver: Driver, bindings: list[dict[str, Any]], headers_list: list[dict[str, Any]]
) -> Any:
    """For each queue (bound with its arguments), the indexes of the messages it received."""
    prefix = f"gen-{uuid.uuid4().hex[:8]}"
    exchange = f"{prefix}-hx"
    await driver.declare_exchange(exchange, "headers", auto_delete=True)
    for q, arguments in enumerate(bindings):
        await driver.declare_queue(f"{prefix}-q{q}", exclusive=True)
        await driver.bind(f"{prefix}-q{q}", exchange, "", arguments)
    for m, headers in enumerate(headers_list):
        await driver.publish(exchange, "", str(m), headers=headers)
    return [
        [int(msg.body) for msg in await driver.drain(f"{prefix}-q{q}")]
        for q in range(len(bindings))
    ]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(binding_arguments(), min_size=1, max_size=4),
    st.lists(message_headers, min_size=1, max_size=6),
)
async def test_generated_headers_bindings_match_alike(
    differential_url: str, bindings: list[dict[str, Any]], headers_list: list[dict[str, Any]]
) -> None:
    async with AmqpDriver(differential_url) as driver:
        rabbitmq = await match(driver, bindings, headers_list)
    async with MemoryDriver() as driver:
        memory = await match(driver, bindings, headers_list)
    assert memory == rabbitmq
