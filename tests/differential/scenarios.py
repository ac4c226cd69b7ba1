"""Scenarios: each one drives a broker through ``Driver`` and returns what a user could observe,
as plain data. RabbitMQ's observation is the truth the memory broker's must equal.

A scenario names its own queues and exchanges; the drivers clean up after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from .driver import Driver, Msg

Scenario = Callable[[Driver], Awaitable[Any]]
SCENARIOS: list[Scenario] = []


def scenario(function: Scenario) -> Scenario:
    SCENARIOS.append(function)
    return function


def shorts(messages: list[Msg]) -> list[str]:
    return [msg.short for msg in messages]


def full(messages: list[Msg]) -> list[dict[str, Any]]:
    return [msg.as_data() for msg in messages]


async def drain_all(driver: Driver, queues: list[str]) -> dict[str, list[str]]:
    return {queue: shorts(await driver.drain(queue)) for queue in queues}


# ---------------------------------------------------------------------------------------------
# Routing

# (pattern, key) pairs from WIRE.md and its edge cases; every pattern meets every key.
TOPIC_PATTERNS = [
    "#",
    "#.#",
    "",
    "*",
    "*.*",
    "*.a",
    "#.a",
    "a.*.b",
    "*.*.*",
    "a.*",
    "a.#",
    "a.#.c",
    "#.b",
    "a.b",
    "a",
    "a.#.#",
    "#.*",
    "*.#",
    ".",
    "a.",
]
TOPIC_KEYS = ["", ".", "..", ".a", "a..b", "a.", "a", "a.b", "a.b.c", "a.c", "b", "a.x.b", "A"]


@scenario
async def topic_routing(driver: Driver) -> Any:
    await driver.declare_exchange("topic-x", "topic")
    for i, pattern in enumerate(TOPIC_PATTERNS):
        await driver.declare_queue(f"topic-q{i}")
        await driver.bind(f"topic-q{i}", "topic-x", pattern)
    for key in TOPIC_KEYS:
        await driver.publish("topic-x", key, f"[{key}]")
    return {
        pattern: [msg.routing_key for msg in await driver.drain(f"topic-q{i}")]
        for i, pattern in enumerate(TOPIC_PATTERNS)
    }


@scenario
async def direct_routing(driver: Driver) -> Any:
    await driver.declare_exchange("direct-x", "direct")
    for queue, key in [
        ("d-a", "a"),
        ("d-b", "b"),
        ("d-a2", "a"),
        ("d-empty", ""),
        ("d-dots", "a.b"),
    ]:
        await driver.declare_queue(queue)
        await driver.bind(queue, "direct-x", key)
    for key in ["a", "b", "c", "", "A", "a.b", "a.*", "#"]:
        await driver.publish("direct-x", key, key or "<empty>")
    return await drain_all(driver, ["d-a", "d-b", "d-a2", "d-empty", "d-dots"])


@scenario
async def fanout_routing(driver: Driver) -> Any:
    await driver.declare_exchange("fan-x", "fanout")
    await driver.declare_queue("fan-1")
    await driver.declare_queue("fan-2")
    await driver.declare_queue("fan-unbound")
    await driver.bind("fan-1", "fan-x", "x")
    await driver.bind("fan-2", "fan-x", "")
    for key in ["a", "", "x"]:
        await driver.publish("fan-x", key, key or "<empty>")
    fan_1 = await driver.drain("fan-1")
    return {
        "bodies": await drain_all(driver, ["fan-2", "fan-unbound"]) | {"fan-1": shorts(fan_1)},
        "keys": [msg.routing_key for msg in fan_1],
    }


@scenario
async def default_exchange(driver: Driver) -> Any:
    await driver.declare_queue("dq")
    outcomes = [
        await driver.publish("", "dq", "1"),
        await driver.publish("", "missing", "2"),
        await driver.publish("", "missing", "3", mandatory=True),
        await driver.publish("", "dq", "4", mandatory=True),
        await driver.publish("amq.direct", "dq", "5", mandatory=True),
    ]
    await driver.declare_exchange("dx", "direct")
    errors = [
        await driver.attempt(driver.bind("dq", "", "dq")),
        await driver.attempt(driver.declare_exchange("amq.custom", "direct")),
        await driver.attempt(driver.declare_queue("amq.custom")),
    ]
    return {"outcomes": outcomes, "dq": full(await driver.drain("dq")), "errors": errors}


@scenario
async def predeclared_exchanges(driver: Driver) -> Any:
    await driver.declare_queue("pre")
    await driver.bind("pre", "amq.topic", "a.#")
    await driver.bind("pre", "amq.fanout")
    await driver.bind("pre", "amq.headers", "", {"h": 1})
    await driver.publish("amq.topic", "a.b", "topic")
    await driver.publish("amq.fanout", "", "fanout")
    await driver.publish("amq.headers", "", "headers", headers={"h": 1})
    await driver.publish("amq.match", "", "match", headers={"h": 1})
    return {
        "pre": shorts(await driver.drain("pre")),
        "redeclare": [
            await driver.attempt(driver.declare_exchange("amq.topic", "topic", durable=True)),
            await driver.attempt(driver.declare_exchange("amq.topic", "direct", durable=True)),
        ],
    }


HEADER_BINDINGS: dict[str, dict[str, Any]] = {
    "h-all": {"x-match": "all", "a": 1, "b": "x"},
    "h-any": {"x-match": "any", "a": 1, "b": "x"},
    "h-absent": {"a": 1, "b": "x"},
    "h-all-empty": {"x-match": "all"},
    "h-any-empty": {"x-match": "any"},
    "h-no-args": {},
    "h-x-ignored": {"x-match": "all", "x-custom": "y", "a": 1},
    "h-any-x-ignored": {"x-match": "any", "x-custom": "y"},
    "h-all-with-x": {"x-match": "all-with-x", "x-custom": "y", "a": 1},
    "h-any-with-x": {"x-match": "any-with-x", "x-custom": "y"},
    "h-string-one": {"a": "1"},
    "h-bool": {"t": True},
    "h-float": {"f": 1.5},
    "h-void": {"v": None},
    "h-table": {"tbl": {"k": "v"}},
    "h-array": {"arr": [1, "two"]},
}
HEADER_MESSAGES: list[dict[str, Any]] = [
    {},
    {"a": 1},
    {"a": 1, "b": "x"},
    {"a": 1, "b": "x", "extra": "z"},
    {"a": "1", "b": "x"},
    {"a": 2, "b": "x"},
    {"b": "x"},
    {"a": 1, "x-custom": "y"},
    {"x-custom": "y"},
    {"t": True},
    {"t": 1},
    {"f": 1.5},
    {"f": 1},
    {"v": "anything"},
    {"v": None},
    {"tbl": {"k": "v"}},
    {"arr": [1, "two"]},
    {"arr": ["two", 1]},
]


@scenario
async def headers_exchange(driver: Driver) -> Any:
    await driver.declare_exchange("hx", "headers")
    for queue, arguments in HEADER_BINDINGS.items():
        await driver.declare_queue(queue)
        await driver.bind(queue, "hx", "ignored-key", arguments)
    for i, headers in enumerate(HEADER_MESSAGES):
        await driver.publish("hx", "any-key", str(i), headers=headers)
    return await drain_all(driver, list(HEADER_BINDINGS))


@scenario
async def headers_exchange_bad_x_match(driver: Driver) -> Any:
    await driver.declare_exchange("hx-bad", "headers")
    await driver.declare_queue("hq-bad")
    return [
        await driver.attempt(driver.bind("hq-bad", "hx-bad", "", {"x-match": "some"})),
        await driver.attempt(driver.bind("hq-bad", "hx-bad", "", {"x-match": 1})),
        await driver.attempt(driver.bind("hq-bad", "hx-bad", "", {"x-match": "any"})),
    ]


@scenario
async def one_copy_per_queue(driver: Driver) -> Any:
    await driver.declare_exchange("once-t", "topic")
    await driver.declare_exchange("once-d", "direct")
    await driver.declare_queue("once")
    await driver.declare_queue("once-other")
    for pattern in ["a.*", "#", "a.b", "*.b", "a.#"]:
        await driver.bind("once", "once-t", pattern)
    await driver.bind("once-other", "once-t", "a.b")
    await driver.bind("once", "once-d", "k")
    await driver.bind("once", "once-d", "k", {"arg": 1})
    await driver.bind("once", "once-d", "k", {"arg": "1"})
    await driver.bind("once", "once-d", "k")  # twice: a no-op
    await driver.publish("once-t", "a.b", "topic")
    await driver.publish("once-d", "k", "direct")
    await driver.publish("once-d", "k", "cc", headers={"CC": ["k", "k"], "BCC": ["k"]})
    await driver.publish("", "once", "default-cc", headers={"CC": ["once", "once-other"]})
    return await drain_all(driver, ["once", "once-other"])


@scenario
async def cc_and_bcc(driver: Driver) -> Any:
    await driver.declare_exchange("cc-x", "direct")
    await driver.declare_exchange("cc-t", "topic")
    for queue in ["cc-a", "cc-b", "cc-c", "cc-d"]:
        await driver.declare_queue(queue)
    await driver.bind("cc-a", "cc-x", "a")
    await driver.bind("cc-b", "cc-x", "b")
    await driver.bind("cc-c", "cc-x", "c")
    await driver.bind("cc-d", "cc-t", "d.#")
    await driver.publish("cc-x", "a", "cc-bcc", headers={"CC": ["b"], "BCC": ["c"], "h": 1})
    await driver.publish("cc-x", "z", "only-cc", headers={"CC": ["c", "nothing"]})
    await driver.publish("cc-x", "z", "only-bcc", headers={"BCC": ["a"]})
    await driver.publish("cc-t", "x", "topic-cc", headers={"CC": ["d.e.f"]})
    await driver.publish("", "cc-a", "default-cc", headers={"CC": ["cc-d"], "BCC": ["cc-b"]})
    outcomes = [
        await driver.publish("cc-x", "z", "cc-mandatory", headers={"CC": ["a"]}, mandatory=True),
        await driver.publish("cc-x", "z", "bcc-mandatory", headers={"BCC": ["b"]}, mandatory=True),
    ]
    observed = {
        queue: full(await driver.drain(queue)) for queue in ["cc-a", "cc-b", "cc-c", "cc-d"]
    }
    errors = [
        await driver.attempt(driver.publish("cc-x", "a", "bad-cc", headers={"CC": "b"})),
        await driver.attempt(driver.publish("cc-x", "a", "bad-bcc", headers={"BCC": 1})),
    ]
    return {"queues": observed, "outcomes": outcomes, "errors": errors}


@scenario
async def mandatory_unroutable(driver: Driver) -> Any:
    await driver.declare_exchange("m-direct", "direct")
    await driver.declare_exchange("m-fanout", "fanout")
    await driver.declare_exchange("m-headers", "headers")
    await driver.declare_queue("m-q")
    await driver.bind("m-q", "m-direct", "a")
    await driver.bind("m-q", "m-headers", "", {"h": "v"})
    outcomes = [
        await driver.publish("m-direct", "a", "1", mandatory=True),
        await driver.publish("m-direct", "b", "2", mandatory=True),
        await driver.publish("m-direct", "b", "3", mandatory=False),
        await driver.publish("m-fanout", "", "4", mandatory=True),
        await driver.publish("m-headers", "", "5", headers={"h": "w"}, mandatory=True),
        await driver.publish("m-headers", "", "6", headers={"h": "v"}, mandatory=True),
    ]
    return {"outcomes": outcomes, "m-q": shorts(await driver.drain("m-q"))}


@scenario
async def alternate_exchange(driver: Driver) -> Any:
    await driver.declare_exchange("ae", "fanout")
    await driver.declare_exchange("main", "direct", arguments={"alternate-exchange": "ae"})
    await driver.declare_exchange("main-2", "direct", arguments={"alternate-exchange": "main"})
    await driver.declare_exchange("main-bad-ae", "direct", arguments={"alternate-exchange": "no"})
    await driver.declare_queue("ae-q")
    await driver.declare_queue("main-q")
    await driver.bind("ae-q", "ae")
    await driver.bind("main-q", "main", "k")
    outcomes = [
        await driver.publish("main", "k", "routed"),
        await driver.publish("main", "other", "to-ae", mandatory=True),
        await driver.publish("main-2", "k", "chained", mandatory=True),
        await driver.publish("main-bad-ae", "k", "lost", mandatory=True),
    ]
    return {"outcomes": outcomes, **await drain_all(driver, ["ae-q", "main-q"])}


# ---------------------------------------------------------------------------------------------
# Consumers: requeue, prefetch, round robin


@scenario
async def requeue_order_with_cancelled_consumer(driver: Driver) -> Any:
    await driver.declare_queue("rq")
    for i in range(1, 9):
        await driver.publish("", "rq", str(i))
    consumer = await driver.consume("rq", prefetch=5)
    await consumer.wait_for(5)
    first = await consumer.quiet()
    await consumer.cancel()
    await consumer.ack(0)  # 1
    await consumer.reject(1, requeue=True)  # 2, the second of five unacked
    await consumer.nack(3, requeue=True, multiple=True)  # 3 and 4
    await consumer.ack(4)  # 5
    after = await consumer.quiet()
    return {"first": shorts(first), "after": shorts(after), "queue": full(await driver.drain("rq"))}


@scenario
async def requeue_to_a_live_consumer(driver: Driver) -> Any:
    await driver.declare_queue("rl")
    consumer = await driver.consume("rl", prefetch=5)
    for i in range(1, 6):
        await driver.publish("", "rl", str(i))
    await consumer.wait_for(5)
    await consumer.reject(1, requeue=True)
    await consumer.wait_for(6)
    await consumer.nack(3, requeue=True, multiple=False)
    await consumer.wait_for(7)
    await consumer.nack(4, requeue=True, multiple=True)  # 1, 3 (again) and 5
    await consumer.wait_for(10)
    seen = await consumer.quiet()
    for index in consumer.unsettled():
        await consumer.ack(index)
    return {"deliveries": shorts(seen), "left": shorts(await driver.drain("rl"))}


@scenario
async def reject_without_requeue_drops(driver: Driver) -> Any:
    await driver.declare_queue("rd")
    for i in range(1, 4):
        await driver.publish("", "rd", str(i))
    consumer = await driver.consume("rd", prefetch=10)
    await consumer.wait_for(3)
    await consumer.cancel()
    await consumer.reject(0, requeue=False)
    await consumer.nack(2, requeue=False, multiple=True)
    return {"seen": shorts(await consumer.quiet()), "left": shorts(await driver.drain("rd"))}


@scenario
async def prefetch_under_load(driver: Driver) -> Any:
    await driver.declare_queue("pf")
    consumer = await driver.consume("pf", prefetch=3)
    for i in range(1, 11):
        await driver.publish("", "pf", str(i))
    steps = []
    await consumer.wait_for(3)
    steps.append(shorts(await consumer.quiet()))
    await consumer.ack(0)
    await consumer.wait_for(4)
    steps.append(shorts(await consumer.quiet()))
    for index in (1, 2, 3):
        await consumer.ack(index)
    await consumer.wait_for(7)
    steps.append(shorts(await consumer.quiet()))
    await consumer.nack(6, requeue=True, multiple=True)  # 5, 6, 7 back
    await consumer.wait_for(10)
    steps.append(shorts(await consumer.quiet()))
    return steps


@scenario
async def prefetch_of_messages_already_queued(driver: Driver) -> Any:
    await driver.declare_queue("pq-ready")
    for i in range(1, 8):
        await driver.publish("", "pq-ready", str(i))
    consumer = await driver.consume("pq-ready", prefetch=3)
    await consumer.wait_for(3)
    first = shorts(await consumer.quiet())
    await consumer.reject(1, requeue=False)
    await consumer.wait_for(4)
    return {"first": first, "then": shorts(await consumer.quiet())}


@scenario
async def round_robin(driver: Driver) -> Any:
    await driver.declare_queue("rr")
    one = await driver.consume("rr", prefetch=0)
    two = await driver.consume("rr", prefetch=0)
    for i in range(1, 9):
        await driver.publish("", "rr", str(i))
    await one.wait_for(4)
    await two.wait_for(4)
    return {"one": shorts(await one.quiet()), "two": shorts(await two.quiet())}


@scenario
async def round_robin_skips_a_full_consumer(driver: Driver) -> Any:
    await driver.declare_queue("rr-full")
    one = await driver.consume("rr-full", prefetch=1)
    two = await driver.consume("rr-full", prefetch=0)
    for i in range(1, 7):
        await driver.publish("", "rr-full", str(i))
    await one.wait_for(1)
    await two.wait_for(5)
    return {"one": shorts(await one.quiet()), "two": shorts(await two.quiet())}


# ---------------------------------------------------------------------------------------------
# TTL, dead-lettering, max-length


@scenario
async def queue_ttl_dead_letters_with_x_death(driver: Driver) -> Any:
    await driver.declare_exchange("work-x", "direct")
    await driver.declare_exchange("dlx", "topic")
    await driver.declare_queue(
        "ttl-q", arguments={"x-message-ttl": 100, "x-dead-letter-exchange": "dlx"}
    )
    await driver.declare_queue("dead-q")
    await driver.bind("ttl-q", "work-x", "order.created")
    await driver.bind("dead-q", "dlx", "#")
    await driver.publish("work-x", "order.created", "1", headers={"service": "orders"})
    return full(await driver.collect("dead-q", 1))


@scenario
async def message_expiration_dead_letters_with_routing_key(driver: Driver) -> Any:
    await driver.declare_queue(
        "hold",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "retry"},
    )
    await driver.declare_queue(
        "hold-ttl",
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "retry",
        },
    )
    await driver.declare_queue("retry")
    await driver.publish("", "hold", "per-message", expiration=100)
    await driver.publish("", "hold-ttl", "lower-queue-ttl", expiration=60000)
    await driver.publish("", "hold-ttl", "lower-message-ttl", expiration=50)
    messages = await driver.collect("retry", 3)
    return sorted((msg.as_data() for msg in messages), key=lambda data: data["body"])


@scenario
async def only_the_head_expires(driver: Driver) -> Any:
    await driver.declare_queue(
        "head", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "head-dead"}
    )
    await driver.declare_queue("head-dead")
    await driver.publish("", "head", "slow", expiration=400)
    await driver.publish("", "head", "fast", expiration=20)
    await asyncio.sleep(0.2)
    early = shorts(await driver.drain("head-dead"))
    return {"early": early, "later": shorts(await driver.collect("head-dead", 2))}


@scenario
async def cycling_twice_through_a_ttl_queue(driver: Driver) -> Any:
    await driver.declare_queue(
        "wait",
        arguments={
            "x-message-ttl": 50,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "work",
        },
    )
    await driver.declare_queue("work")
    await driver.publish("", "wait", "job", headers={"attempt": 1})
    [first] = await driver.collect("work", 1)
    await driver.publish("", "wait", "job", headers=dict(first.raw_headers))
    [second] = await driver.collect("work", 1)
    return {"first": first.as_data(), "second": second.as_data()}


@scenario
async def automatic_dead_letter_cycle_is_dropped(driver: Driver) -> Any:
    common = {"x-message-ttl": 30, "x-dead-letter-exchange": ""}
    await driver.declare_queue(
        "cycle-a", arguments={**common, "x-dead-letter-routing-key": "cycle-b"}
    )
    await driver.declare_queue(
        "cycle-b", arguments={**common, "x-dead-letter-routing-key": "cycle-a"}
    )
    await driver.publish("", "cycle-a", "loop")
    await asyncio.sleep(0.5)
    return await drain_all(driver, ["cycle-a", "cycle-b"])


@scenario
async def rejected_message_is_dead_lettered(driver: Driver) -> Any:
    await driver.declare_exchange("rej-x", "topic")
    await driver.declare_exchange("rej-dlx", "fanout")
    await driver.declare_queue("rej-q", arguments={"x-dead-letter-exchange": "rej-dlx"})
    await driver.declare_queue("rej-dead")
    await driver.bind("rej-q", "rej-x", "a.*")
    await driver.bind("rej-dead", "rej-dlx")
    await driver.publish("rej-x", "a.b", "1", expiration=60000)
    await driver.publish("rej-x", "a.c", "2", headers={"CC": ["a.d"]})
    consumer = await driver.consume("rej-q", prefetch=10)
    await consumer.wait_for(2)
    await consumer.reject(0, requeue=False)
    await consumer.nack(1, requeue=False, multiple=False)
    dead = await driver.collect("rej-dead", 2)
    return {"dead": full(dead)}


@scenario
async def rejection_cycle_counts_up(driver: Driver) -> Any:
    await driver.declare_queue(
        "rc-q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "rc-q"}
    )
    await driver.publish("", "rc-q", "again")
    consumer = await driver.consume("rc-q", prefetch=1)
    await consumer.wait_for(1)
    await consumer.reject(0, requeue=False)
    await consumer.wait_for(2)
    await consumer.reject(1, requeue=False)
    await consumer.wait_for(3)
    await consumer.ack(2)
    return full(await consumer.quiet())


@scenario
async def dead_letter_of_cc_message(driver: Driver) -> Any:
    await driver.declare_exchange("ccd-x", "direct")
    await driver.declare_exchange("ccd-dlx", "direct")
    await driver.declare_queue(
        "ccd-ttl", arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "ccd-dlx"}
    )
    # A longer TTL than ccd-ttl's: two queues' expiries 0 ms apart would race for ccd-z.
    await driver.declare_queue(
        "ccd-ttl-rk",
        arguments={
            "x-message-ttl": 200,
            "x-dead-letter-exchange": "ccd-dlx",
            "x-dead-letter-routing-key": "k",
        },
    )
    await driver.declare_queue("ccd-a")
    await driver.declare_queue("ccd-z")
    await driver.bind("ccd-ttl", "ccd-x", "a")
    await driver.bind("ccd-ttl-rk", "ccd-x", "b")
    await driver.bind("ccd-a", "ccd-dlx", "a")
    await driver.bind("ccd-z", "ccd-dlx", "z")
    await driver.bind("ccd-z", "ccd-dlx", "k")
    await driver.publish("ccd-x", "a", "cc", headers={"CC": ["z"], "BCC": ["y"]})
    await driver.publish("ccd-x", "b", "cc-rk", headers={"CC": ["q"]})
    await asyncio.sleep(0.5)
    return {queue: full(await driver.drain(queue)) for queue in ["ccd-a", "ccd-z"]}


@scenario
async def max_length_drop_head(driver: Driver) -> Any:
    await driver.declare_queue(
        "limited",
        arguments={
            "x-max-length": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "overflow",
        },
    )
    await driver.declare_queue("limited-nodlx", arguments={"x-max-length": 1})
    await driver.declare_queue("overflow")
    outcomes = [await driver.publish("", "limited", str(i)) for i in range(1, 5)]
    outcomes += [await driver.publish("", "limited-nodlx", str(i)) for i in range(1, 4)]
    return {
        "outcomes": outcomes,
        "limited": shorts(await driver.drain("limited")),
        "limited-nodlx": shorts(await driver.drain("limited-nodlx")),
        "overflow": full(await driver.drain("overflow")),
    }


@scenario
async def max_length_reject_publish(driver: Driver) -> Any:
    await driver.declare_queue(
        "strict", arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
    )
    await driver.declare_queue(
        "strict-dlx",
        arguments={
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "strict-dead",
        },
    )
    await driver.declare_queue("strict-dead")
    await driver.declare_exchange("strict-fan", "fanout")
    await driver.declare_queue("strict-other")
    await driver.bind("strict", "strict-fan")
    await driver.bind("strict-other", "strict-fan")
    outcomes = [await driver.publish("", "strict", str(i)) for i in range(1, 4)]
    outcomes.append(await driver.publish("strict-fan", "", "fan"))
    outcomes += [await driver.publish("", "strict-dlx", f"d{i}") for i in range(1, 3)]
    return {
        "outcomes": outcomes,
        "strict": shorts(await driver.drain("strict")),
        "strict-other": shorts(await driver.drain("strict-other")),
        "strict-dlx": shorts(await driver.drain("strict-dlx")),
        "strict-dead": full(await driver.drain("strict-dead")),
    }


@scenario
async def max_length_counts_ready_messages_only(driver: Driver) -> Any:
    await driver.declare_queue("ml-ready", arguments={"x-max-length": 2})
    consumer = await driver.consume("ml-ready", prefetch=2)
    for i in range(1, 6):
        await driver.publish("", "ml-ready", str(i))
    await consumer.wait_for(2)
    delivered = shorts(await consumer.quiet())
    await consumer.cancel()
    return {"delivered": delivered, "ready": shorts(await driver.drain("ml-ready"))}


@scenario
async def queue_expires_when_unused(driver: Driver) -> Any:
    await driver.declare_queue("expiring", arguments={"x-expires": 150})
    await asyncio.sleep(0.6)
    return await driver.attempt(driver.get("expiring"))


# ---------------------------------------------------------------------------------------------
# Refusals


@scenario
async def queue_redeclared_with_other_arguments(driver: Driver) -> Any:
    await driver.declare_queue("pq", arguments={"x-message-ttl": 100, "x-expires": 60000})
    attempts: dict[str, dict[str, Any]] = {
        "same": {"x-message-ttl": 100, "x-expires": 60000},
        "other-ttl": {"x-message-ttl": 200, "x-expires": 60000},
        "missing-ttl": {"x-expires": 60000},
        "none": {},
        "extra-unknown": {"x-message-ttl": 100, "x-expires": 60000, "x-custom": "y"},
        "extra-max-length": {"x-message-ttl": 100, "x-expires": 60000, "x-max-length": 5},
        "ttl-as-string": {"x-message-ttl": "100", "x-expires": 60000},
        "classic-type": {"x-message-ttl": 100, "x-expires": 60000, "x-queue-type": "classic"},
    }
    results: dict[str, Any] = {
        name: await driver.attempt(driver.declare_queue("pq", arguments=arguments))
        for name, arguments in attempts.items()
    }
    same = {"x-message-ttl": 100, "x-expires": 60000}
    results["durable"] = await driver.attempt(
        driver.declare_queue("pq", durable=True, arguments=same)
    )
    results["auto-delete"] = await driver.attempt(
        driver.declare_queue("pq", auto_delete=True, arguments=same)
    )
    return results


@scenario
async def invalid_queue_arguments(driver: Driver) -> Any:
    cases: dict[str, dict[str, Any]] = {
        "negative-ttl": {"x-message-ttl": -1},
        "string-ttl": {"x-message-ttl": "100"},
        "zero-expires": {"x-expires": 0},
        "negative-max-length": {"x-max-length": -1},
        "unknown-overflow": {"x-overflow": "bogus"},
        "dlrk-without-dlx": {"x-dead-letter-routing-key": "k"},
        "zero-ttl": {"x-message-ttl": 0},
    }
    return {
        name: await driver.attempt(driver.declare_queue(f"bad-{name}", arguments=arguments))
        for name, arguments in cases.items()
    }


@scenario
async def exchange_redeclared_with_other_arguments(driver: Driver) -> Any:
    await driver.declare_exchange("px", "direct")
    await driver.declare_exchange("px-ae", "direct", arguments={"alternate-exchange": "ae"})
    return {
        "same": await driver.attempt(driver.declare_exchange("px", "direct")),
        "type": await driver.attempt(driver.declare_exchange("px", "topic")),
        "durable": await driver.attempt(driver.declare_exchange("px", "direct", durable=True)),
        "auto-delete": await driver.attempt(
            driver.declare_exchange("px", "direct", auto_delete=True)
        ),
        "internal": await driver.attempt(driver.declare_exchange("px", "direct", internal=True)),
        "unknown-argument": await driver.attempt(
            driver.declare_exchange("px", "direct", arguments={"x-custom": 1})
        ),
        "add-alternate": await driver.attempt(
            driver.declare_exchange("px", "direct", arguments={"alternate-exchange": "ae"})
        ),
        "drop-alternate": await driver.attempt(driver.declare_exchange("px-ae", "direct")),
        "other-alternate": await driver.attempt(
            driver.declare_exchange("px-ae", "direct", arguments={"alternate-exchange": "b"})
        ),
        "same-alternate": await driver.attempt(
            driver.declare_exchange("px-ae", "direct", arguments={"alternate-exchange": "ae"})
        ),
    }


@scenario
async def not_found(driver: Driver) -> Any:
    await driver.declare_exchange("nf-x", "direct")
    await driver.declare_queue("nf-q")
    return {
        "bind-missing-queue": await driver.attempt(driver.bind("missing-q", "nf-x", "k")),
        "bind-missing-exchange": await driver.attempt(driver.bind("nf-q", "missing-x", "k")),
        "publish-missing-exchange": await driver.attempt(driver.publish("missing-x", "k", "1")),
        "consume-missing-queue": await driver.attempt(driver.consume("missing-q")),
        "get-missing-queue": await driver.attempt(driver.get("missing-q")),
        "publish-missing-queue": await driver.attempt(driver.publish("", "missing-q", "1")),
    }


@scenario
async def exclusive_queue_is_locked(driver: Driver) -> Any:
    await driver.declare_exchange("ex-x", "direct")
    await driver.declare_queue("ex-q", exclusive=True, conn=0)
    results: dict[str, Any] = {
        "redeclare-owner": await driver.attempt(
            driver.declare_queue("ex-q", exclusive=True, conn=0)
        ),
        "redeclare-other": await driver.attempt(
            driver.declare_queue("ex-q", exclusive=True, conn=1)
        ),
        "redeclare-other-not-exclusive": await driver.attempt(driver.declare_queue("ex-q", conn=1)),
        "bind-other": await driver.attempt(driver.bind("ex-q", "ex-x", "k", conn=1)),
        "consume-other": await driver.attempt(driver.consume("ex-q", conn=1)),
        "bind-owner": await driver.attempt(driver.bind("ex-q", "ex-x", "k", conn=0)),
    }
    results["publish"] = await driver.publish("ex-x", "k", "1")
    results["queue"] = shorts(await driver.drain("ex-q"))
    return results


# ---------------------------------------------------------------------------------------------
# More consumer rules


async def _round_robin_after_an_unblock(driver: Driver, queue: str) -> Any:
    """Three consumers of ``queue``, the first limited to one unacked delivery: where the
    deliveries go before and after it acks (it rejoins the round robin)."""
    limited = await driver.consume(queue, prefetch=1)
    two = await driver.consume(queue, prefetch=0)
    three = await driver.consume(queue, prefetch=0)
    for i in range(1, 6):
        await driver.publish("", queue, str(i))
    await limited.wait_for(1)
    await two.wait_for(2)
    await three.wait_for(2)
    await limited.quiet()
    await limited.ack(0)
    await asyncio.sleep(0.1)
    for i in range(6, 12):
        await driver.publish("", queue, str(i))
    await limited.quiet()
    return {"limited": limited.shorts, "two": two.shorts, "three": three.shorts}


@scenario
async def round_robin_after_a_consumer_unblocks(driver: Driver) -> Any:
    await driver.declare_queue("rr-unblock")
    return await _round_robin_after_an_unblock(driver, "rr-unblock")


@scenario
async def requeue_between_two_consumers(driver: Driver) -> Any:
    await driver.declare_queue("rq2")
    one = await driver.consume("rq2", prefetch=2)
    two = await driver.consume("rq2", prefetch=2)
    for i in range(1, 7):
        await driver.publish("", "rq2", str(i))
    await one.wait_for(2)
    await two.wait_for(2)
    await one.reject(0, requeue=True)
    await one.wait_for(3)
    await two.ack(0)
    await two.wait_for(3)
    await one.quiet()
    return {"one": one.shorts, "two": two.shorts}


@scenario
async def closing_a_connection_requeues(driver: Driver) -> Any:
    await driver.declare_queue("close-q")
    await driver.declare_queue("close-excl", exclusive=True, conn=1)
    for i in range(1, 5):
        await driver.publish("", "close-q", str(i))
    leaving = await driver.consume("close-q", prefetch=2, conn=1)
    await leaving.wait_for(2)
    await leaving.ack(0)
    await driver.close_connection(1)
    await asyncio.sleep(0.1)
    return {
        "left": shorts(await driver.drain("close-q")),
        "exclusive-gone": await driver.attempt(driver.get("close-excl")),
    }


@scenario
async def auto_delete_queue_goes_with_its_last_consumer(driver: Driver) -> Any:
    await driver.declare_queue("ad-q", auto_delete=True)
    await driver.publish("", "ad-q", "1")
    before = await driver.attempt(driver.get("ad-q"))
    one = await driver.consume("ad-q")
    two = await driver.consume("ad-q")
    await one.cancel()
    await asyncio.sleep(0.1)
    still = await driver.attempt(driver.publish("", "ad-q", "2"))
    await two.wait_for(1)
    await two.ack(0)
    await two.cancel()
    await asyncio.sleep(0.1)
    return {
        "before": before,
        "still": still,
        "two": two.shorts,
        "after": await driver.attempt(driver.get("ad-q")),
    }


@scenario
async def exclusive_consumer(driver: Driver) -> Any:
    await driver.declare_queue("xc-q")
    await driver.declare_queue("xc-q2")
    first = await driver.consume("xc-q", exclusive=True)
    await driver.consume("xc-q2")
    return {
        "second": await driver.attempt(driver.consume("xc-q")),
        "second-exclusive": await driver.attempt(driver.consume("xc-q", exclusive=True)),
        "exclusive-after-other": await driver.attempt(driver.consume("xc-q2", exclusive=True)),
        "cancel-then": await _cancel_then_consume(driver, first),
    }


async def _cancel_then_consume(driver: Driver, first: Any) -> Any:
    await first.cancel()
    return await driver.attempt(driver.consume("xc-q", exclusive=True))


@scenario
async def zero_ttl(driver: Driver) -> Any:
    dead = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "zero-dead"}
    await driver.declare_queue("zero", arguments={"x-message-ttl": 0, **dead})
    await driver.declare_queue("zero-msg", arguments=dead)
    await driver.declare_queue("zero-dead")
    await driver.publish("", "zero", "nobody-waits")
    await driver.publish("", "zero-msg", "expiration-0", expiration=0)
    consumer = await driver.consume("zero", prefetch=1)
    await driver.publish("", "zero", "taken")
    await driver.publish("", "zero", "consumer-full")
    await consumer.wait_for(1)
    await asyncio.sleep(0.2)
    dead_letters = await driver.drain("zero-dead")
    return {
        "consumer": shorts(await consumer.quiet()),
        "dead": sorted(msg.body for msg in dead_letters),
        "reasons": sorted(str(msg.headers.get("x-death")) for msg in dead_letters),
    }


@scenario
async def max_length_zero(driver: Driver) -> Any:
    await driver.declare_queue(
        "ml0",
        arguments={
            "x-max-length": 0,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "ml0-dead",
        },
    )
    await driver.declare_queue("ml0-dead")
    await driver.publish("", "ml0", "dropped")
    consumer = await driver.consume("ml0", prefetch=1)
    await driver.publish("", "ml0", "delivered")
    await driver.publish("", "ml0", "no-room")
    await consumer.wait_for(1)
    return {
        "consumer": shorts(await consumer.quiet()),
        "dead": shorts(await driver.drain("ml0-dead")),
    }


@scenario
async def dead_letter_routing_without_dlrk_or_exchange(driver: Driver) -> Any:
    await driver.declare_exchange("dn-x", "direct")
    await driver.declare_queue(
        "dn-ttl", arguments={"x-message-ttl": 30, "x-dead-letter-exchange": ""}
    )
    await driver.declare_queue(
        "dn-missing", arguments={"x-message-ttl": 30, "x-dead-letter-exchange": "no-such-x"}
    )
    await driver.declare_queue("dn-key")
    await driver.bind("dn-ttl", "dn-x", "dn-key")
    await driver.bind("dn-missing", "dn-x", "dn-key")
    await driver.publish("dn-x", "dn-key", "1")
    messages = await driver.collect("dn-key", 1)
    return {"dn-key": full(messages), "dn-missing": shorts(await driver.drain("dn-missing"))}


@scenario
async def expiry_while_the_consumer_is_full(driver: Driver) -> Any:
    await driver.declare_queue(
        "busy",
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "busy-dead",
        },
    )
    await driver.declare_queue("busy-dead")
    consumer = await driver.consume("busy", prefetch=1)
    for i in range(1, 4):
        await driver.publish("", "busy", str(i))
    await consumer.wait_for(1)
    dead = await driver.collect("busy-dead", 2)
    await consumer.ack(0)
    return {"consumer": shorts(await consumer.quiet()), "dead": full(dead)}


@scenario
async def x_death_history_of_several_queues(driver: Driver) -> Any:
    await driver.declare_queue(
        "hist-1",
        arguments={
            "x-message-ttl": 30,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "hist-2",
        },
    )
    await driver.declare_queue(
        "hist-2", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "hist-3"}
    )
    await driver.declare_queue("hist-3")
    await driver.publish("", "hist-1", "m", expiration=5000, headers={"CC": ["nowhere"]})
    consumer = await driver.consume("hist-2")
    await consumer.wait_for(1)
    await consumer.reject(0, requeue=False)
    return full(await driver.collect("hist-3", 1))


@scenario
async def requeued_after_its_ttl_passed(driver: Driver) -> Any:
    await driver.declare_queue(
        "late",
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "late-dead",
        },
    )
    await driver.declare_queue("late-dead")
    for body in ("requeued", "acked", "nacked"):
        await driver.publish("", "late", body)
    consumer = await driver.consume("late", prefetch=3)
    await consumer.wait_for(3)
    await asyncio.sleep(0.25)  # unsettled deliveries do not expire
    await consumer.reject(0, requeue=True)
    await consumer.ack(1)
    await consumer.nack(2, requeue=True, multiple=False)
    dead = await driver.collect("late-dead", 2)
    return {"consumer": shorts(await consumer.quiet()), "dead": full(dead)}


@scenario
async def foreign_x_death_headers(driver: Driver) -> Any:
    await driver.declare_queue(
        "fx",
        arguments={
            "x-message-ttl": 20,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "fx-dead",
        },
    )
    await driver.declare_queue("fx-dead")
    await driver.publish("", "fx", "string", headers={"x-death": "garbage"})
    await driver.publish("", "fx", "empty-array", headers={"x-death": []})
    await driver.publish(
        "", "fx", "other-entry", headers={"x-death": [{"queue": "elsewhere", "reason": "expired"}]}
    )
    await driver.publish(
        "",
        "fx",
        "same-entry",
        headers={
            "x-death": [{"queue": "fx", "reason": "expired", "count": 5}],
            "x-first-death-queue": "kept",
        },
    )
    messages = await driver.collect("fx-dead", 4)
    return sorted((msg.as_data() for msg in messages), key=lambda data: data["body"])


@scenario
async def internal_exchange(driver: Driver) -> Any:
    await driver.declare_exchange("int-x", "fanout", internal=True)
    await driver.declare_exchange("int-front", "fanout")
    await driver.declare_queue("int-q")
    await driver.bind("int-q", "int-x")
    return {
        "publish": await driver.attempt(driver.publish("int-x", "", "1")),
        "queue": shorts(await driver.drain("int-q")),
    }


@scenario
async def cc_with_odd_values(driver: Driver) -> Any:
    await driver.declare_exchange("cco-x", "direct")
    for queue in ("cco-a", "cco-b"):
        await driver.declare_queue(queue)
        await driver.bind(queue, "cco-x", queue)
    await driver.publish("cco-x", "cco-a", "mixed", headers={"CC": [1, "cco-b", True]})
    await driver.publish("cco-x", "none", "empty", headers={"CC": [], "BCC": []})
    await driver.publish("cco-x", "none", "patterns", headers={"CC": ["cco-*", "#"]})
    return {queue: full(await driver.drain(queue)) for queue in ("cco-a", "cco-b")}


@scenario
async def queue_in_use_does_not_expire(driver: Driver) -> Any:
    await driver.declare_queue("used", arguments={"x-expires": 150})
    await driver.declare_queue("polled", arguments={"x-expires": 300})
    consumer = await driver.consume("used")
    for _ in range(6):
        await asyncio.sleep(0.1)
        await driver.get("polled")
    await consumer.cancel()
    alive = [await driver.attempt(driver.get("used")), await driver.attempt(driver.get("polled"))]
    await asyncio.sleep(0.6)
    gone = [await driver.attempt(driver.get("used")), await driver.attempt(driver.get("polled"))]
    return {"alive": alive, "gone": gone}


@scenario
async def single_active_consumer(driver: Driver) -> Any:
    await driver.declare_queue("sac-empty", arguments={"x-single-active-consumer": True})
    refused = await driver.attempt(driver.consume("sac-empty", exclusive=True))
    await driver.declare_queue("sac", arguments={"x-single-active-consumer": True})
    one = await driver.consume("sac", prefetch=2, conn=1)
    two = await driver.consume("sac", prefetch=2)
    three = await driver.consume("sac", prefetch=2)
    for i in range(1, 5):
        await driver.publish("", "sac", str(i))
    await one.wait_for(2)
    await one.ack(0)
    await one.wait_for(3)
    first = (shorts(await one.quiet()), two.shorts, three.shorts)
    await driver.close_connection(1)  # 2 and 3 go back; two takes over
    await two.wait_for(2)
    second = (shorts(await two.quiet()), three.shorts)
    await two.ack(0)
    await two.ack(1)
    await two.wait_for(3)
    await two.ack(2)
    await two.cancel()  # with nothing ready: three takes over for the next message
    await driver.publish("", "sac", "5")
    await three.wait_for(1)
    return {
        "exclusive": refused,
        "first": first,
        "second": second,
        "two": two.shorts,
        "three": shorts(await three.quiet()),
    }


@scenario
async def max_length_bytes(driver: Driver) -> Any:
    dead = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "mlb-dead"}
    await driver.declare_queue("mlb", arguments={"x-max-length-bytes": 10, **dead})
    await driver.declare_queue(
        "mlb-reject", arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"}
    )
    await driver.declare_queue(
        "mlb-reject-dlx",
        arguments={"x-max-length-bytes": 6, "x-overflow": "reject-publish-dlx", **dead},
    )
    await driver.declare_queue("mlb-both", arguments={"x-max-length-bytes": 10, "x-max-length": 2})
    await driver.declare_queue("mlb-dead")
    outcomes: dict[str, list[str]] = {}
    for queue in ["mlb", "mlb-reject", "mlb-reject-dlx", "mlb-both"]:
        outcomes[queue] = [
            await driver.publish("", queue, body)
            for body in ["aaaa", "bbbb", "cccc", "", "dd", "eeeeeeeeeeee"]
        ]
    return {
        "outcomes": outcomes,
        "ready": await drain_all(driver, ["mlb", "mlb-reject", "mlb-reject-dlx", "mlb-both"]),
        "dead": full(await driver.drain("mlb-dead")),
    }


@scenario
async def max_length_bytes_counts_ready_messages_only(driver: Driver) -> Any:
    await driver.declare_queue(
        "mlb-ready", arguments={"x-max-length-bytes": 4, "x-overflow": "reject-publish"}
    )
    consumer = await driver.consume("mlb-ready", prefetch=1)
    outcomes = [await driver.publish("", "mlb-ready", body) for body in ["aaaa", "bbbb", "c"]]
    await consumer.wait_for(1)
    await consumer.cancel()
    return {
        "outcomes": outcomes,
        "consumer": shorts(await consumer.quiet()),
        "ready": shorts(await driver.drain("mlb-ready")),
    }


@scenario
async def requeue_over_max_length_drops_the_head(driver: Driver) -> Any:
    dead = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "rml-dead"}
    await driver.declare_queue("rml", arguments={"x-max-length": 2, **dead})
    await driver.declare_queue("rml-bytes", arguments={"x-max-length-bytes": 2, **dead})
    await driver.declare_queue("rml-dead")
    results = {}
    for queue in ["rml", "rml-bytes"]:
        consumer = await driver.consume(queue, prefetch=1)
        for i in range(1, 4):
            await driver.publish("", queue, str(i))
        await consumer.wait_for(1)
        await consumer.reject(0, requeue=True)
        await consumer.wait_for(2)
        results[queue] = shorts(await consumer.quiet())
        await consumer.cancel()
        await consumer.nack(1, requeue=True, multiple=False)
    await asyncio.sleep(0.1)
    return {
        "consumers": results,
        "ready": await drain_all(driver, ["rml", "rml-bytes"]),
        "dead": [
            (msg.body, msg.headers["x-death"][0]["queue"]) for msg in await driver.drain("rml-dead")
        ],
    }


@scenario
async def connection_close_requeue_over_max_length(driver: Driver) -> Any:
    dead = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "ccm-dead"}
    await driver.declare_queue("ccm", arguments={"x-max-length": 2, **dead})
    await driver.declare_queue("ccm-dead")
    consumer = await driver.consume("ccm", prefetch=2, conn=1)
    for i in range(1, 5):
        await driver.publish("", "ccm", str(i))
    await consumer.wait_for(2)
    await driver.close_connection(1)
    await asyncio.sleep(0.1)
    return {
        "ready": shorts(await driver.drain("ccm")),
        "dead": shorts(await driver.drain("ccm-dead")),
    }


@scenario
async def more_invalid_queue_arguments(driver: Driver) -> Any:
    cases: dict[str, dict[str, Any]] = {
        "negative-max-length-bytes": {"x-max-length-bytes": -1},
        "string-max-length-bytes": {"x-max-length-bytes": "10"},
        "string-expires": {"x-expires": "10"},
        "bool-max-length": {"x-max-length": True},
        "float-ttl": {"x-message-ttl": 1.5},
        "int-dlx": {"x-dead-letter-exchange": 1},
        "int-dlrk": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": 1},
        "int-overflow": {"x-overflow": 1},
        "string-sac": {"x-single-active-consumer": "yes"},
        "unknown-queue-type": {"x-queue-type": "bogus"},
        "huge-ttl": {"x-message-ttl": 2**33},
    }
    return {
        name: await driver.attempt(driver.declare_queue(f"bad2-{name}", arguments=arguments))
        for name, arguments in cases.items()
    }


# ---------------------------------------------------------------------------------------------
# Quorum queues (with_queue_options(quorum=True))

QUORUM = {"x-queue-type": "quorum"}


@scenario
async def quorum_queue_declarations(driver: Driver) -> Any:
    new = {
        "non-durable": driver.declare_queue("qd-1", arguments=QUORUM),
        "exclusive": driver.declare_queue("qd-2", durable=True, exclusive=True, arguments=QUORUM),
        "auto-delete": driver.declare_queue(
            "qd-3", durable=True, auto_delete=True, arguments=QUORUM
        ),
        "priority": driver.declare_queue(
            "qd-4", durable=True, arguments={**QUORUM, "x-max-priority": 5}
        ),
        "lazy": driver.declare_queue(
            "qd-5", durable=True, arguments={**QUORUM, "x-queue-mode": "lazy"}
        ),
        "options": driver.declare_queue(
            "qd-6",
            durable=True,
            arguments={
                **QUORUM,
                "x-single-active-consumer": True,
                "x-max-length": 10,
                "x-overflow": "reject-publish",
                "x-message-ttl": 60000,
                "x-expires": 600000,
                "x-delivery-limit": 3,
            },
        ),
    }
    results = {name: await driver.attempt(operation) for name, operation in new.items()}
    await driver.declare_queue("qt-none", durable=True)
    await driver.declare_queue("qt-classic", durable=True, arguments={"x-queue-type": "classic"})
    await driver.declare_queue("qt-quorum", durable=True, arguments=QUORUM)
    for existing in ("none", "classic", "quorum"):
        for declared in ("none", "classic", "quorum"):
            arguments = {} if declared == "none" else {"x-queue-type": declared}
            results[f"{existing}-as-{declared}"] = await driver.attempt(
                driver.declare_queue(f"qt-{existing}", durable=True, arguments=arguments)
            )
    return results


@scenario
async def quorum_queue_requeue_order(driver: Driver) -> Any:
    await driver.declare_queue("qro", durable=True, arguments=QUORUM)
    for i in range(1, 9):
        await driver.publish("", "qro", str(i))
    consumer = await driver.consume("qro", prefetch=5)
    await consumer.wait_for(5)
    await consumer.cancel()
    await consumer.ack(0)
    await consumer.reject(3, requeue=True)  # 4
    await consumer.reject(1, requeue=True)  # 2
    await consumer.nack(4, requeue=True, multiple=True)  # 3 and 5
    await asyncio.sleep(0.5)  # returns reach the queue asynchronously
    return full(await driver.drain("qro"))


@scenario
async def quorum_queue_delivery_count_and_limit(driver: Driver) -> Any:
    await driver.declare_queue("qdl-dead")
    await driver.declare_queue(
        "qdl",
        durable=True,
        arguments={
            **QUORUM,
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "qdl-dead",
        },
    )
    await driver.publish("", "qdl", "poison", headers={"h": "v"})
    consumer = await driver.consume("qdl", prefetch=1)
    for attempt in range(3):
        await consumer.wait_for(attempt + 1)
        await consumer.reject(attempt, requeue=True)
    dead = await driver.collect("qdl-dead", 1)
    return {"deliveries": full(await consumer.quiet()), "dead": full(dead)}


@scenario
async def quorum_queue_reject_publish(driver: Driver) -> Any:
    await driver.declare_queue(
        "qrp",
        durable=True,
        arguments={**QUORUM, "x-max-length": 2, "x-overflow": "reject-publish"},
    )
    outcomes = [await driver.publish("", "qrp", str(i)) for i in range(1, 6)]
    taken = [msg.short for msg in [await driver.get("qrp")] if msg is not None]
    await asyncio.sleep(0.2)
    outcomes.append(await driver.publish("", "qrp", "6"))  # 2 left: still over 80%
    taken += [msg.short for msg in [await driver.get("qrp")] if msg is not None]
    await asyncio.sleep(0.2)
    outcomes.append(await driver.publish("", "qrp", "7"))  # 1 left: accepted again
    outcomes.append(await driver.publish("", "qrp", "8"))
    return {"outcomes": outcomes, "taken": taken, "left": shorts(await driver.drain("qrp"))}


@scenario
async def quorum_queue_requeue_goes_to_the_back(driver: Driver) -> Any:
    await driver.declare_queue("qback", durable=True, arguments=QUORUM)
    for i in range(1, 5):
        await driver.publish("", "qback", str(i))
    consumer = await driver.consume("qback", prefetch=1)
    await consumer.wait_for(1)
    await consumer.reject(0, requeue=True)
    await consumer.wait_for(2)
    await consumer.reject(1, requeue=True)
    await consumer.wait_for(3)
    await consumer.ack(2)
    await consumer.wait_for(4)
    await consumer.ack(3)
    await consumer.wait_for(5)
    await consumer.cancel()
    deliveries = full(await consumer.quiet())
    await consumer.ack(4)
    return {"deliveries": deliveries, "left": full(await driver.drain("qback"))}


@scenario
async def quorum_queue_round_robin(driver: Driver) -> Any:
    await driver.declare_queue("qrr", durable=True, arguments=QUORUM)
    return await _round_robin_after_an_unblock(driver, "qrr")


# ---------------------------------------------------------------------------------------------
# What the wire carries: size limits and header values as pamqp encodes and decodes them

FRAME_MAX = 131072  # RabbitMQ's default, and the memory broker's
MAX_MESSAGE_SIZE = 134217728  # RabbitMQ 3.10's default max_message_size, and the memory broker's


def typed(value: Any) -> Any:
    """A header value with the type of each part, as a consumer (pamqp) reads it."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [typed(item) for item in value]
    if isinstance(value, datetime):
        return ("datetime", value.isoformat())
    return (type(value).__name__, repr(value))


async def _typed_headers(driver: Driver, queue: str, headers: dict[str, Any]) -> Any:
    await driver.publish("", queue, "h", headers=headers)
    [msg] = await driver.drain(queue)
    return typed(dict(msg.raw_headers))


@scenario
async def body_over_max_message_size(driver: Driver) -> Any:
    await driver.declare_queue("size-q")
    refused = await driver.attempt(driver.publish("", "size-q", "x" * (MAX_MESSAGE_SIZE + 1)))
    accepted = await driver.publish("", "size-q", "y" * 1_000_000)
    return {
        "refused": refused,
        "accepted": accepted,
        "queue": [len(msg.body) for msg in await driver.drain("size-q")],
    }


@scenario
async def header_frame_over_frame_max(driver: Driver) -> Any:
    await driver.declare_queue("frame-q")
    over = await driver.attempt(driver.publish("", "frame-q", "1", headers={"h": "y" * 140000}))
    assert over is not None
    # RabbitMQ names the frame's payload size: size a header so that it is exactly frame_max
    # (accepted: RabbitMQ tolerates the 8 bytes of frame overhead), then one byte more.
    payload = int(over[1].split("frame_too_large,")[1].split(",")[0])
    fitting = 140000 - (payload - FRAME_MAX)
    at_limit = await driver.publish("", "frame-q", "2", headers={"h": "y" * fitting})
    one_more = await driver.attempt(
        driver.publish("", "frame-q", "3", headers={"h": "y" * (fitting + 1)})
    )
    return {
        "over": over,
        "at-limit": at_limit,
        "one-more": one_more,
        "queue": shorts(await driver.drain("frame-q")),
    }


@scenario
async def header_floats_are_32_bit(driver: Driver) -> Any:
    await driver.declare_queue("float-q")
    return await _typed_headers(
        driver,
        "float-q",
        {"tenth": 0.1, "half": 1.5, "tiny": 1e-45, "big": 3.4e38, "list": [0.2], "t": {"f": 2.7}},
    )


@scenario
async def header_decimals_travel_exactly(driver: Driver) -> Any:
    await driver.declare_queue("decimal-q")
    return await _typed_headers(
        driver,
        "decimal-q",
        {"tenth": Decimal("0.1"), "neg": Decimal("-12.345"), "exp": Decimal("1E+3")},
    )


@scenario
async def header_datetimes_are_whole_seconds(driver: Driver) -> Any:
    await driver.declare_queue("time-q")
    return await _typed_headers(
        driver,
        "time-q",
        {
            "aware": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            "offset": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "naive": datetime(2024, 1, 2, 3, 4, 5),
        },
    )


@scenario
async def header_integers_keep_their_values(driver: Driver) -> Any:
    await driver.declare_queue("int-q")
    return await _typed_headers(
        driver,
        "int-q",
        {
            "byte": -128,
            "short": 32767,
            "ushort": 65535,
            "long": -(2**31),
            "ulong": 2**32 - 1,
            "longlong": 2**63 - 1,
            "min": -(2**63),
            "bool": True,
            "none": None,
            "bytearray": bytearray(b"\x00\xff"),
        },
    )


@scenario
async def header_strings_that_are_not_utf8(driver: Driver) -> Any:
    await driver.declare_queue("utf8-q")
    return await _typed_headers(
        driver,
        "utf8-q",
        {
            "invalid": b"\xff\xfe",
            "valid": "caf\u00e9".encode(),
            "text": "caf\u00e9",
            "in-list": [b"\xc3", "ok"],
            "in-table": {"k": b"\x80abc"},
        },
    )
