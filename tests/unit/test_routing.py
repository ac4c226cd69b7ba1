"""Topic matching and overlap, by RabbitMQ's rules (verified against the broker in
tests/rabbitmq/test_topic_routing.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from amqp_events import ConfigurationError, Route
from amqp_events._routes import TypeMapping
from amqp_events._topics import topic_matches, topics_overlap

# (pattern, key, matches) from ../shared/WIRE.md, as RabbitMQ 3.10 routes them.
WIRE_CASES = [
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("#", "anything.at.all", True),
    ("#", "", True),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("#.b", "b", True),
    ("#.b", "a.b", True),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.x.c", True),
    ("*", "", False),
    ("#.#", "", True),
    ("", "", True),
    ("", "a", False),
    ("*.*", ".", True),
    ("*.a", ".a", True),
    ("#.a", ".a", True),
    ("a.*.b", "a..b", True),
    ("*.*.*", "a..b", True),
    ("a.*", "a.", True),
    ("a.#", "a.", True),
    ("Order.Created", "Order.Created", True),
    ("Order.Created", "Order.Updated", False),
    ("Order.#", "Order.Created", True),
    ("Order.#", "Orders.Created", False),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), WIRE_CASES)
def test_topic_matches_wire_table(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


OVERLAP_CASES = [
    ("Order.Created", "Order.Created", True),
    ("Order.Created", "Order.Updated", False),
    ("Order.#", "Order.Created", True),
    ("Order.*", "Order.Created.X", False),
    ("#", "", True),
    ("*", "", False),
    ("a.#", "#.b", True),
    ("a.*", "*.b", True),
    ("a.*.c", "a.b.*", True),
    ("a.*", "b.*", False),
    ("a.#.z", "a.b", False),
]


@pytest.mark.parametrize(("a", "b", "expected"), OVERLAP_CASES)
def test_topics_overlap_table(a: str, b: str, expected: bool) -> None:
    assert topics_overlap(a, b) is expected
    assert topics_overlap(b, a) is expected


# Small alphabets make collisions likely, so the properties below are tested where it matters.
words = st.sampled_from(["a", "b", ""])
pattern_words = st.sampled_from(["a", "b", "", "*", "#"])
keys = st.lists(words, max_size=4).map(".".join)
patterns = st.lists(pattern_words, max_size=4).map(".".join)


def _reference_match(pattern: str, key: str) -> bool:
    """An independent, recursive statement of RabbitMQ's topic rule."""
    p = pattern.split(".") if pattern else []
    k = key.split(".") if key else []

    def go(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(go(i + 1, jj) for jj in range(j, len(k) + 1))
        return j < len(k) and (p[i] == "*" or p[i] == k[j]) and go(i + 1, j + 1)

    return go(0, 0)


@given(patterns, keys)
def test_matcher_agrees_with_reference(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) == _reference_match(pattern, key)


def _all_keys(max_words: int) -> list[str]:
    found = [""]
    for n in range(1, max_words + 1):
        found.extend(".".join(ws) for ws in itertools.product(["a", "b", "", "z"], repeat=n))
    return found


ALL_KEYS = _all_keys(6)


@settings(max_examples=300)
@given(patterns, patterns)
def test_overlap_iff_some_key_matches_both(a: str, b: str) -> None:
    # Patterns of at most 4 words over {a, b, ""}: a shared key, if any, has at most 6 words
    # (a pattern with a '#' has at most 3 other words, each of which the key may need: 'a.a.a.#'
    # and '#.b.a.a' share only 'a.a.a.b.a.a'), and "z" stands for any other word.
    witness = any(topic_matches(a, k) and topic_matches(b, k) for k in ALL_KEYS)
    assert topics_overlap(a, b) == witness


class OrderCreated(BaseModel):
    id: str


class OrderUpdated(BaseModel):
    id: str


def test_type_routed_twice_names_both_keys() -> None:
    with pytest.raises(
        ConfigurationError, match=r"OrderCreated declared twice.*Order\.Created.*Order\.New"
    ):
        TypeMapping([Route(OrderCreated, "Order.Created"), Route(OrderCreated, "Order.New")])


def test_key_routed_to_two_types() -> None:
    with pytest.raises(ConfigurationError, match="OrderCreated and OrderUpdated"):
        TypeMapping([Route(OrderCreated, "Order.X"), Route(OrderUpdated, "Order.X")])


def test_route_rejects_patterns_and_non_models() -> None:
    with pytest.raises(ConfigurationError, match="pattern"):
        Route(OrderCreated, "Order.*")
    with pytest.raises(ConfigurationError, match="pydantic model"):
        Route(dict, "Order.Created")  # type: ignore[arg-type]
