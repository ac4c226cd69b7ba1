"""The in-memory broker follows RabbitMQ 3.10's rules; each test checks one of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from amqp_events._errors import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    PublishError,
)
from amqp_events._topology import (
    BindingSpec,
    ConsumerSpec,
    ExchangeSpec,
    QueueSpec,
    Topology,
)
from amqp_events._transport import transport_for
from amqp_events._transport._base import Delivery, OutgoingProperties, Transport
from amqp_events._transport.memory import (
    BindingInfo,
    MemoryBroker,
    broker_for_url,
)
from amqp_events._transport.memory._session import MemoryOpener
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    broker = MemoryBroker()
    yield broker
    broker.reset()


class Inbox:
    """A consumer callback that records deliveries and acks them unless told not to."""

    def __init__(self, *, ack: bool = True) -> None:
        self.deliveries: list[Delivery] = []
        self._ack = ack
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self._ack:
            await delivery.ack()
        self._changed.set()

    async def wait_for(self, count: int, within: float = 2.0) -> list[Delivery]:
        async with asyncio.timeout(within):
            while len(self.deliveries) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.deliveries

    @property
    def bodies(self) -> list[bytes]:
        return [delivery.body for delivery in self.deliveries]


def queue(broker: MemoryBroker, name: str, **arguments: Any) -> str:
    return broker.declare_queue(name, arguments=arguments)


def exchange(broker: MemoryBroker, name: str, type_: Any = "topic", **arguments: Any) -> None:
    broker.declare_exchange(name, type_, arguments=arguments)


# Positional-only, so that ``**{"key": ...}`` or any other argument name lands in ``arguments``.
def bind(broker: MemoryBroker, q: str, x: str, key: str = "", /, **arguments: Any) -> None:
    broker.bind(q, x, key, arguments=arguments)


def bodies(broker: MemoryBroker, q: str) -> list[bytes]:
    return [message.body for message in broker.messages(q)]


def reply_code(error: pytest.ExceptionInfo[BrokerError]) -> int:
    return error.value.reply_code


# ---------------------------------------------------------------------------------------------
# Topic, direct, fanout and default exchange routing

TOPIC_CASES = [
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("#", "", True),
    ("#", "a.b", True),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("#.b", "b", True),
    ("#.b", "a.b", True),
    ("a.#.c", "a.c", True),
    ("#.#", "", True),
    ("", "", True),
    ("*", "", False),
    ("", "a", False),
    ("*.*", ".", True),
    ("*", ".", False),
    ("*.a", ".a", True),
    ("#.a", ".a", True),
    ("a.*.b", "a..b", True),
    ("*.*.*", "a..b", True),
    ("a.*", "a.", True),
    ("a.#", "a.", True),
    ("Order.Created", "Order.Created", True),
    ("Order.Created", "order.created", False),
]


@pytest.mark.parametrize(("pattern", "key", "routed"), TOPIC_CASES)
def test_topic_exchange_routes_by_rabbitmq_rules(
    broker: MemoryBroker, pattern: str, key: str, routed: bool
) -> None:
    exchange(broker, "events")
    queue(broker, "q")
    bind(broker, "q", "events", pattern)
    assert broker.publish("events", key, b"m") == int(routed)
    assert bodies(broker, "q") == ([b"m"] if routed else [])


def test_direct_exchange_routes_by_equal_key(broker: MemoryBroker) -> None:
    exchange(broker, "requests", "direct")
    queue(broker, "q")
    bind(broker, "q", "requests", "Order.Get")
    assert broker.publish("requests", "Order.Get", b"1") == 1
    assert broker.publish("requests", "Order.*", b"2") == 0
    assert broker.publish("requests", "order.get", b"3") == 0
    assert bodies(broker, "q") == [b"1"]


def test_fanout_exchange_routes_to_every_bound_queue(broker: MemoryBroker) -> None:
    exchange(broker, "all", "fanout")
    queue(broker, "q1")
    queue(broker, "q2")
    bind(broker, "q1", "all", "ignored")
    bind(broker, "q2", "all")
    assert broker.publish("all", "anything", b"m") == 2


def test_default_exchange_routes_to_the_queue_named_by_the_key(broker: MemoryBroker) -> None:
    queue(broker, "work")
    assert broker.publish("", "work", b"m") == 1
    assert broker.publish("", "missing", b"m") == 0
    assert bodies(broker, "work") == [b"m"]
    assert "" in broker.exchange_names()
    assert broker.exchange_info("").type == "direct"


def test_default_exchange_cannot_be_declared_or_bound(broker: MemoryBroker) -> None:
    queue(broker, "q")
    with pytest.raises(BrokerError, match="ACCESS_REFUSED") as declared:
        exchange(broker, "", "direct")
    with pytest.raises(BrokerError, match="default exchange") as bound:
        bind(broker, "q", "", "q")
    assert reply_code(declared) == reply_code(bound) == 403


def test_amq_prefix_is_reserved_but_predeclared_exchanges_exist(broker: MemoryBroker) -> None:
    assert {"amq.direct", "amq.topic", "amq.fanout", "amq.headers"} <= set(broker.exchange_names())
    exchange(broker, "amq.topic", "topic")  # equivalent redeclaration is fine
    with pytest.raises(BrokerError, match="reserved prefix") as x:
        exchange(broker, "amq.mine", "topic")
    with pytest.raises(BrokerError, match="reserved prefix") as q:
        queue(broker, "amq.mine")
    assert reply_code(x) == reply_code(q) == 403


def test_a_message_reaches_a_queue_once_however_many_bindings_match(
    broker: MemoryBroker,
) -> None:
    exchange(broker, "events")
    queue(broker, "q")
    for pattern in ("Order.Created", "Order.*", "#"):
        bind(broker, "q", "events", pattern)
    assert broker.publish("events", "Order.Created", b"m") == 1
    assert bodies(broker, "q") == [b"m"]


def test_binding_twice_is_idempotent_and_unbind_stops_routing(broker: MemoryBroker) -> None:
    exchange(broker, "events")
    queue(broker, "q")
    bind(broker, "q", "events", "a")
    bind(broker, "q", "events", "a")
    assert broker.bindings("q") == [BindingInfo("q", "events", "a", {})]
    broker.unbind("q", "events", "a")
    broker.unbind("q", "events", "a")  # unbinding what is not bound is a no-op
    assert broker.bindings() == []
    assert broker.publish("events", "a", b"m") == 0


def test_bindings_differing_only_in_argument_types_are_distinct(broker: MemoryBroker) -> None:
    exchange(broker, "h", "headers")
    queue(broker, "q")
    bind(broker, "q", "h", a=1)
    bind(broker, "q", "h", a=True)
    bind(broker, "q", "h", a="1")
    assert len(broker.bindings("q")) == 3


def test_cc_header_adds_routing_keys_and_bcc_is_stripped(broker: MemoryBroker) -> None:
    queue(broker, "main")
    queue(broker, "copy")
    queue(broker, "hidden")
    routed = broker.publish("", "main", b"m", {"CC": ["copy"], "BCC": ["hidden"]})
    assert routed == 3
    for name in ("main", "copy", "hidden"):
        (message,) = broker.messages(name)
        assert message.routing_key == "main"
        assert message.headers == {"CC": ["copy"]}


def test_cc_header_must_be_an_array(broker: MemoryBroker) -> None:
    queue(broker, "main")
    with pytest.raises(BrokerError) as error:
        broker.publish("", "main", b"m", {"CC": "copy"})
    assert reply_code(error) == 406


def test_unroutable_message_goes_to_the_alternate_exchange(broker: MemoryBroker) -> None:
    exchange(broker, "unrouted", "fanout")
    exchange(broker, "events", "topic", **{"alternate-exchange": "unrouted"})
    queue(broker, "lost")
    bind(broker, "lost", "unrouted")
    assert broker.publish("events", "nobody.listens", b"m", mandatory=True) == 1
    assert bodies(broker, "lost") == [b"m"]


# ---------------------------------------------------------------------------------------------
# Headers exchange (WIRE.md "Headers exchange")

HEADERS_CASES = [
    # (binding arguments, message headers, routed)
    ({}, {}, True),  # all with no arguments matches everything
    ({}, {"a": 1}, True),
    ({"x-match": "all"}, {"a": 1}, True),
    ({"x-match": "any"}, {"a": 1}, False),  # any with no arguments matches nothing
    ({"service": "caller"}, {"service": "caller"}, True),  # no x-match means all
    ({"service": "caller"}, {"service": "caller", "extra": 1}, True),
    ({"service": "caller"}, {"service": "other"}, False),
    ({"service": "caller"}, {}, False),
    ({"a": 1}, {"a": "1"}, False),  # type and value must both agree
    ({"a": "1"}, {"a": 1}, False),
    ({"a": True}, {"a": 1}, False),
    ({"a": 1}, {"a": True}, False),
    ({"a": 1.5}, {"a": 1.5}, True),
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 2, "b": 3}, False),
    ({"x-foo": "y"}, {}, True),  # x- arguments are ignored by all ...
    ({"x-match": "any", "x-foo": "y"}, {"x-foo": "y"}, False),  # ... and by any
    ({"x-match": "all-with-x", "x-foo": "y"}, {}, False),  # but not by the -with-x modes
    ({"x-match": "all-with-x", "x-foo": "y"}, {"x-foo": "y"}, True),
    ({"x-match": "any-with-x", "x-foo": "y", "a": 1}, {"x-foo": "y"}, True),
    ({"x-match": "any-with-x", "x-foo": "y"}, {"x-foo": "z"}, False),
    ({"a": None}, {"a": "anything"}, True),  # a void argument matches on presence
    ({"a": None}, {}, False),
    ({"t": {"k": [1, "2"]}}, {"t": {"k": [1, "2"]}}, True),
]


@pytest.mark.parametrize(("arguments", "headers", "routed"), HEADERS_CASES)
def test_headers_exchange_matches_by_rabbitmq_rules(
    broker: MemoryBroker, arguments: dict[str, Any], headers: dict[str, Any], routed: bool
) -> None:
    exchange(broker, "responses", "headers")
    queue(broker, "q")
    bind(broker, "q", "responses", "ignored.key", **arguments)
    assert broker.publish("responses", "any.key", b"m", headers) == int(routed)


def test_headers_exchange_refuses_an_unknown_x_match(broker: MemoryBroker) -> None:
    exchange(broker, "responses", "headers")
    queue(broker, "q")
    with pytest.raises(BrokerError, match="x-match") as error:
        bind(broker, "q", "responses", **{"x-match": "some"})
    assert reply_code(error) == 406


def test_x_match_refusals_read_as_rabbitmq_writes_them(broker: MemoryBroker) -> None:
    # Erlang prints the value as a binary, and names the type as the client encoded it.
    exchange(broker, "responses", "headers")
    queue(broker, "q")
    with pytest.raises(BrokerError) as value:
        bind(broker, "q", "responses", **{"x-match": "some"})
    with pytest.raises(BrokerError) as type_:
        bind(broker, "q", "responses", **{"x-match": 1})
    assert str(value.value) == (
        '406: PRECONDITION_FAILED - Invalid x-match field value <<"some">>; '
        "expected all, any, all-with-x, or any-with-x"
    )
    assert str(type_.value) == (
        "406: PRECONDITION_FAILED - Invalid x-match field type byte (value 1); expected longstr"
    )


# ---------------------------------------------------------------------------------------------
# Declarations: equivalence, NOT_FOUND, RESOURCE_LOCKED


def test_redeclaring_an_exchange_differently_is_precondition_failed(
    broker: MemoryBroker,
) -> None:
    exchange(broker, "events", "topic")
    with pytest.raises(BrokerError, match="'type' for exchange 'events'") as type_error:
        exchange(broker, "events", "direct")
    with pytest.raises(BrokerError, match="'durable' for exchange 'events'") as durable_error:
        broker.declare_exchange("events", "topic", durable=False)
    with pytest.raises(BrokerError, match="'internal'"):
        broker.declare_exchange("events", "topic", internal=True)
    assert reply_code(type_error) == reply_code(durable_error) == 406
    assert "PRECONDITION_FAILED - inequivalent arg" in str(type_error.value)


def test_inequivalent_arguments_read_as_rabbitmq_writes_them(broker: MemoryBroker) -> None:
    # Both present: the values only. One missing: value and type, the type being the one the
    # client library encodes (pamqp picks the smallest integer type that holds the value).
    queue(broker, "q", **{"x-message-ttl": 100, "x-expires": 60000})
    exchange(broker, "x", "direct", **{"alternate-exchange": "ae"})
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"x-message-ttl": 200, "x-expires": 60000},
            "'x-message-ttl' for queue 'q' in vhost '/': received '200' but current is '100'",
        ),
        (
            {"x-message-ttl": "100", "x-expires": 60000},
            "'x-message-ttl' for queue 'q' in vhost '/': received '100' but current is '100'",
        ),
        (
            {"x-expires": 60000},
            "'x-message-ttl' for queue 'q' in vhost '/': received none but "
            "current is the value '100' of type 'byte'",
        ),
        (
            {"x-message-ttl": 100},
            "'x-expires' for queue 'q' in vhost '/': received none but "
            "current is the value '60000' of type 'unsignedshort'",
        ),
        (
            {"x-message-ttl": 100, "x-expires": 60000, "x-max-length": 70000},
            "'x-max-length' for "
            "queue 'q' in vhost '/': received the value '70000' of type 'signedint' but current "
            "is none",
        ),
    ]
    for arguments, text in cases:
        with pytest.raises(BrokerError) as error:
            queue(broker, "q", **arguments)
        assert str(error.value) == f"406: PRECONDITION_FAILED - inequivalent arg {text}"
    with pytest.raises(BrokerError) as alternate:
        exchange(broker, "x", "direct", **{"alternate-exchange": "other"})
    assert str(alternate.value).endswith(
        "'alternate-exchange' for exchange 'x' in vhost '/': received 'other' but current is 'ae'"
    )


def test_exchange_redeclaration_compares_only_alternate_exchange(broker: MemoryBroker) -> None:
    exchange(broker, "events", "topic", **{"alternate-exchange": "ae"})
    exchange(broker, "events", "topic", **{"alternate-exchange": "ae", "x-other": 1})
    with pytest.raises(BrokerError, match="'alternate-exchange' for exchange 'events'"):
        exchange(broker, "events", "topic", **{"alternate-exchange": "other"})


def test_redeclaring_a_queue_differently_is_precondition_failed(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-expires": 1000})
    queue(broker, "q", **{"x-expires": 1000, "x-custom": "ignored"})
    with pytest.raises(BrokerError, match="'x-expires' for queue 'q'") as changed:
        queue(broker, "q", **{"x-expires": 2000})
    with pytest.raises(BrokerError, match="'x-message-ttl' for queue 'q'") as added:
        queue(broker, "q", **{"x-expires": 1000, "x-message-ttl": 5})
    with pytest.raises(BrokerError, match="'x-expires'") as float_value:
        queue(broker, "q", **{"x-expires": 1000.0})
    with pytest.raises(BrokerError, match="'durable' for queue 'q'") as durable:
        broker.declare_queue("q", durable=False, arguments={"x-expires": 1000})
    with pytest.raises(BrokerError, match="'auto_delete'") as auto_delete:
        broker.declare_queue("q", auto_delete=True, arguments={"x-expires": 1000})
    errors = (changed, added, float_value, durable, auto_delete)
    assert {reply_code(error) for error in errors} == {406}


def test_invalid_queue_arguments_are_refused(broker: MemoryBroker) -> None:
    for arguments in (
        {"x-message-ttl": -1},
        {"x-expires": 0},
        {"x-max-length": "5"},
        {"x-overflow": "drop-tail"},
        {"x-dead-letter-routing-key": "k"},
    ):
        with pytest.raises(BrokerError, match="invalid arg") as error:
            queue(broker, "q", **arguments)
        assert reply_code(error) == 406
    assert broker.queue_names() == []


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (
            {"x-message-ttl": "100"},
            "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': "
            '"expected integer, got longstr"',
        ),
        (
            {"x-max-length": True},
            "invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got bool\"",
        ),
        (
            {"x-max-length-bytes": -1},
            "invalid arg 'x-max-length-bytes' for queue 'q' in vhost '/': {value_negative,-1}",
        ),
        (
            {"x-overflow": "bogus"},
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow",
        ),
        (
            {"x-overflow": 1},
            "invalid arg 'x-overflow' for queue 'q' in vhost '/': {unacceptable_type,byte}",
        ),
        (
            {"x-dead-letter-exchange": 1},
            "invalid type 'byte' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'",
        ),
        (
            {"x-single-active-consumer": "yes"},
            "invalid arg 'x-single-active-consumer' for queue "
            "'q' in vhost '/': {unacceptable_type,longstr}",
        ),
        (
            {"x-queue-type": "bogus"},
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': "
            "\"unsupported queue type 'bogus'\"",
        ),
    ],
)
def test_invalid_queue_arguments_read_as_rabbitmq_writes_them(
    broker: MemoryBroker, arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(BrokerError) as error:
        queue(broker, "q", **arguments)
    assert str(error.value) == f"406: PRECONDITION_FAILED - {problem}"


def test_header_type_errors_name_the_wire_type(broker: MemoryBroker) -> None:
    queue(broker, "q")
    with pytest.raises(BrokerError) as error:
        broker.publish("", "q", b"m", {"BCC": 1})
    assert str(error.value) == (
        '406: PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"BCC",byte}'
    )


def test_missing_queue_or_exchange_is_not_found(broker: MemoryBroker) -> None:
    exchange(broker, "events")
    queue(broker, "q")
    with pytest.raises(BrokerError, match="NOT_FOUND - no queue 'x' in vhost '/'") as q:
        bind(broker, "x", "events", "a")
    with pytest.raises(BrokerError, match="NOT_FOUND - no exchange 'y' in vhost '/'") as x:
        bind(broker, "q", "y", "a")
    with pytest.raises(BrokerError, match="no exchange 'y'") as published:
        broker.publish("y", "a", b"m")
    with pytest.raises(BrokerError, match="no queue 'x'") as consumed:
        broker.connect().consume("x", Inbox())
    with pytest.raises(BrokerError, match="no queue 'x'") as inspected:
        broker.messages("x")
    errors = (q, x, published, consumed, inspected)
    assert {reply_code(error) for error in errors} == {404}


def test_publishing_to_an_internal_exchange_is_refused(broker: MemoryBroker) -> None:
    broker.declare_exchange("inner", "fanout", internal=True)
    with pytest.raises(BrokerError, match="internal exchange 'inner'") as error:
        broker.publish("inner", "", b"m")
    assert reply_code(error) == 403


def test_exclusive_queue_is_locked_to_its_connection(broker: MemoryBroker) -> None:
    owner, other = broker.connect(), broker.connect()
    settings: dict[str, Any] = {"durable": False, "exclusive": True, "auto_delete": True}
    broker.declare_queue("mine", **settings, connection=owner)
    broker.declare_queue("mine", **settings, connection=owner)  # the owner may redeclare it
    with pytest.raises(BrokerError, match="RESOURCE_LOCKED") as declared:
        broker.declare_queue("mine", **settings, connection=other)
    with pytest.raises(BrokerError, match="RESOURCE_LOCKED") as consumed:
        other.consume("mine", Inbox())
    with pytest.raises(BrokerError, match="RESOURCE_LOCKED") as bound:
        broker.bind("mine", "amq.topic", "a", connection=other)
    with pytest.raises(BrokerError, match="RESOURCE_LOCKED") as not_exclusive:
        broker.declare_queue("mine", durable=False, auto_delete=True, connection=owner)
    errors = (declared, consumed, bound, not_exclusive)
    assert {reply_code(error) for error in errors} == {405}
    assert broker.publish("", "mine", b"m") == 1  # anyone may publish to it


def test_exclusive_queue_is_deleted_when_its_connection_closes(broker: MemoryBroker) -> None:
    owner = broker.connect()
    broker.declare_queue("mine", exclusive=True, connection=owner)
    bind(broker, "mine", "amq.topic", "a")
    owner.close()
    assert broker.queue_names() == []
    assert broker.bindings() == []


def test_exclusive_queue_needs_a_connection(broker: MemoryBroker) -> None:
    with pytest.raises(ConfigurationError, match="exclusive"):
        broker.declare_queue("mine", exclusive=True)


def test_unnamed_queue_gets_a_generated_name(broker: MemoryBroker) -> None:
    name = broker.declare_queue("")
    assert name.startswith("amq.gen-")
    assert broker.queue_names() == [name]


async def test_exclusive_consumer_excludes_others(broker: MemoryBroker) -> None:
    queue(broker, "q")
    conn = broker.connect()
    conn.consume("q", Inbox())
    with pytest.raises(BrokerError, match="in exclusive use") as refused:
        conn.consume("q", Inbox(), exclusive=True)
    queue(broker, "solo")
    conn.consume("solo", Inbox(), exclusive=True)
    with pytest.raises(BrokerError, match="in exclusive use") as blocked:
        broker.connect().consume("solo", Inbox())
    assert reply_code(refused) == reply_code(blocked) == 403


# ---------------------------------------------------------------------------------------------
# Publishing


def test_each_queue_gets_its_own_copy_of_the_headers(broker: MemoryBroker) -> None:
    exchange(broker, "all", "fanout")
    for name in ("q1", "q2"):
        queue(broker, name)
        bind(broker, name, "all")
    headers = {"service": "orders"}
    broker.publish("all", "k", b"m", headers)
    headers["service"] = "changed"
    (first,) = broker.messages("q1")
    (second,) = broker.messages("q2")
    assert first.headers == second.headers == {"service": "orders"}
    queues = broker._vhost.queues
    assert queues["q1"].ready[0].headers is not queues["q2"].ready[0].headers


def test_message_properties_are_kept_and_message_id_generated(broker: MemoryBroker) -> None:
    queue(broker, "q")
    properties = OutgoingProperties(
        content_type="application/json",
        correlation_id="c-1",
        reply_to="replies",
        message_id="m-1",
    )
    broker.publish("", "q", b"1", properties=properties)
    broker.publish("", "q", b"2")
    given, generated = broker.messages("q")
    assert given.properties.content_type == "application/json"
    assert given.properties.correlation_id == "c-1"
    assert given.properties.reply_to == "replies"
    assert given.properties.message_id == "m-1"
    assert given.properties.delivery_mode == 2
    assert given.exchange == ""
    assert given.redelivered is False
    assert generated.properties.message_id is not None
    assert len(generated.properties.message_id) == 32


def test_mandatory_unroutable_publish_raises(broker: MemoryBroker) -> None:
    exchange(broker, "events")
    assert broker.publish("events", "nobody", b"m") == 0
    with pytest.raises(PublishError, match="'events'.*'nobody'.*unroutable"):
        broker.publish("events", "nobody", b"m", mandatory=True)


def test_negative_expiration_is_refused(broker: MemoryBroker) -> None:
    queue(broker, "q")
    with pytest.raises(BrokerError, match="invalid expiration") as error:
        broker.publish("", "q", b"m", expiration=-1)
    assert reply_code(error) == 406


# ---------------------------------------------------------------------------------------------
# Consumers: asynchronous delivery, round-robin, prefetch, settling


async def test_delivery_runs_in_a_task_not_inside_publish(broker: MemoryBroker) -> None:
    queue(broker, "q")
    inbox = Inbox()
    broker.connect().consume("q", inbox)
    broker.publish("", "q", b"m", {"k": "v"}, content_type="text/plain")
    assert inbox.deliveries == []
    (delivery,) = await inbox.wait_for(1)
    assert (delivery.body, delivery.routing_key, delivery.exchange) == (b"m", "q", "")
    assert delivery.headers == {"k": "v"}
    assert delivery.content_type == "text/plain"
    assert delivery.redelivered is False
    await broker.wait_until_idle()
    assert broker.queue_info("q").messages_unacknowledged == 0


async def test_messages_are_delivered_in_fifo_order(broker: MemoryBroker) -> None:
    queue(broker, "q")
    for i in range(5):
        broker.publish("", "q", str(i).encode())
    inbox = Inbox()
    broker.connect().consume("q", inbox, prefetch=1)
    await inbox.wait_for(5)
    assert inbox.bodies == [b"0", b"1", b"2", b"3", b"4"]


async def test_consumers_of_a_queue_are_served_round_robin(broker: MemoryBroker) -> None:
    queue(broker, "q")
    conn = broker.connect()
    first, second = Inbox(), Inbox()
    conn.consume("q", first)
    conn.consume("q", second)
    for i in range(6):
        broker.publish("", "q", str(i).encode())
    await broker.wait_until_idle()
    assert first.bodies == [b"0", b"2", b"4"]
    assert second.bodies == [b"1", b"3", b"5"]


async def test_a_consumer_found_full_rejoins_the_round_robin_at_its_tail(
    broker: MemoryBroker,
) -> None:
    # RabbitMQ takes a consumer at its prefetch limit out of the round robin when its turn
    # comes, and puts it back at the tail once it has room: it does not jump the queue.
    queue(broker, "q")
    conn = broker.connect()
    limited, two, three = Inbox(ack=False), Inbox(), Inbox()
    conn.consume("q", limited, prefetch=1)
    conn.consume("q", two)
    conn.consume("q", three)
    for i in range(1, 6):
        broker.publish("", "q", str(i).encode())
    await two.wait_for(2)
    await three.wait_for(2)
    await limited.deliveries[0].ack()
    for i in range(6, 12):
        broker.publish("", "q", str(i).encode())
    await two.wait_for(5)
    await three.wait_for(4)
    assert limited.bodies == [b"1", b"8"]
    assert two.bodies == [b"2", b"4", b"6", b"9", b"11"]
    assert three.bodies == [b"3", b"5", b"7", b"10"]


async def test_prefetch_bounds_unsettled_deliveries_per_consumer(broker: MemoryBroker) -> None:
    queue(broker, "q")
    held = Inbox(ack=False)
    broker.connect().consume("q", held, prefetch=2)
    for i in range(5):
        broker.publish("", "q", str(i).encode())
    await held.wait_for(2)
    await asyncio.sleep(0)
    assert held.bodies == [b"0", b"1"]
    info = broker.queue_info("q")
    assert (info.messages_ready, info.messages_unacknowledged, info.consumers) == (3, 2, 1)
    await held.deliveries[0].ack()
    await held.wait_for(3)
    assert held.bodies[2] == b"2"


async def test_a_busy_consumer_does_not_hold_up_another(broker: MemoryBroker) -> None:
    queue(broker, "q")
    conn = broker.connect()
    slow, fast = Inbox(ack=False), Inbox()
    conn.consume("q", slow, prefetch=1)
    conn.consume("q", fast, prefetch=1)
    for i in range(4):
        broker.publish("", "q", str(i).encode())
    await fast.wait_for(3)
    assert slow.bodies == [b"0"]
    assert fast.bodies == [b"1", b"2", b"3"]


async def test_requeue_puts_the_message_back_at_its_place_redelivered(
    broker: MemoryBroker,
) -> None:
    queue(broker, "q")
    for body in (b"1", b"2", b"3", b"4"):
        broker.publish("", "q", body)
    held = Inbox(ack=False)
    conn = broker.connect()
    tag = conn.consume("q", held, prefetch=3)
    first, second, _third = await held.wait_for(3)
    conn.cancel(tag)  # so the requeued messages stay visible
    await second.reject(requeue=True)
    await first.reject(requeue=True)
    assert bodies(broker, "q") == [b"1", b"2", b"4"]
    assert [message.redelivered for message in broker.messages("q")] == [True, True, False]
    again = Inbox()
    conn.consume("q", again)
    await again.wait_for(3)
    assert again.bodies == [b"1", b"2", b"4"]
    assert [delivery.redelivered for delivery in again.deliveries] == [True, True, False]


async def test_settling_twice_is_an_unknown_delivery_tag(broker: MemoryBroker) -> None:
    queue(broker, "q")
    held = Inbox(ack=False)
    broker.connect().consume("q", held)
    broker.publish("", "q", b"m")
    (delivery,) = await held.wait_for(1)
    await delivery.ack()
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED - unknown delivery tag") as error:
        await delivery.ack()
    with pytest.raises(BrokerError, match="unknown delivery tag"):
        await delivery.reject(requeue=False)
    assert reply_code(error) == 406


async def test_settling_after_the_connection_closed(broker: MemoryBroker) -> None:
    queue(broker, "q")
    held = Inbox(ack=False)
    conn = broker.connect()
    conn.consume("q", held)
    broker.publish("", "q", b"m")
    (delivery,) = await held.wait_for(1)
    conn.close()
    # The broker no longer knows the tag; the delivery object ignores it (logged at debug).
    with pytest.raises(BrokerError, match="unknown delivery tag"):
        conn.ack(1)
    await delivery.ack()
    await delivery.reject(requeue=False)
    (message,) = broker.messages("q")
    assert message.redelivered is True


async def test_cancelled_consumer_gets_no_more_but_can_settle(broker: MemoryBroker) -> None:
    queue(broker, "q")
    held = Inbox(ack=False)
    conn = broker.connect()
    tag = conn.consume("q", held)
    broker.publish("", "q", b"1")
    (delivery,) = await held.wait_for(1)
    conn.cancel(tag)
    conn.cancel(tag)  # cancelling twice is harmless
    broker.publish("", "q", b"2")
    await asyncio.sleep(0)
    assert held.bodies == [b"1"]
    await delivery.ack()
    assert broker.queue_info("q").messages_unacknowledged == 0
    assert bodies(broker, "q") == [b"2"]


async def test_closing_a_connection_requeues_to_other_consumers(broker: MemoryBroker) -> None:
    queue(broker, "q")
    first, second = broker.connect(), broker.connect()
    held = Inbox(ack=False)
    first.consume("q", held, prefetch=2)
    for body in (b"1", b"2"):
        broker.publish("", "q", body)
    await held.wait_for(2)
    broker.publish("", "q", b"3")
    await asyncio.sleep(0)
    first.close()
    assert bodies(broker, "q") == [b"1", b"2", b"3"]  # back in their places
    takeover = Inbox()
    second.consume("q", takeover)
    await takeover.wait_for(3)
    assert takeover.bodies == [b"1", b"2", b"3"]
    assert [delivery.redelivered for delivery in takeover.deliveries] == [True, True, False]
    await broker.wait_until_idle()


async def test_consumer_callback_error_leaves_the_delivery_unsettled(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    queue(broker, "q")

    async def failing(delivery: Delivery) -> None:
        raise RuntimeError("handler bug")

    broker.connect().consume("q", failing)
    broker.publish("", "q", b"m")
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(TimeoutError, match="1 deliveries unacked"),
    ):
        await broker.wait_until_idle(timeout=0.05)
    assert "consumer callback raised" in caplog.text
    assert broker.queue_info("q").messages_unacknowledged == 1


async def test_wait_until_idle_waits_for_handlers(broker: MemoryBroker) -> None:
    queue(broker, "q")
    done: list[bytes] = []

    async def slow(delivery: Delivery) -> None:
        await asyncio.sleep(0.01)
        done.append(delivery.body)
        await delivery.ack()

    broker.connect().consume("q", slow)
    for i in range(3):
        broker.publish("", "q", str(i).encode())
    await broker.wait_until_idle()
    assert done == [b"0", b"1", b"2"]


# ---------------------------------------------------------------------------------------------
# Auto-delete, x-expires, administration


async def test_auto_delete_queue_goes_with_its_last_consumer(broker: MemoryBroker) -> None:
    broker.declare_queue("temp", auto_delete=True)
    bind(broker, "temp", "amq.topic", "a")
    conn = broker.connect()
    first = conn.consume("temp", Inbox())
    second = conn.consume("temp", Inbox())
    conn.cancel(first)
    assert "temp" in broker.queue_names()
    conn.cancel(second)
    assert "temp" not in broker.queue_names()
    assert broker.bindings() == []


def test_auto_delete_queue_without_consumers_stays(broker: MemoryBroker) -> None:
    broker.declare_queue("temp", auto_delete=True)
    conn = broker.connect()
    conn.close()
    assert broker.queue_names() == ["temp"]


async def test_auto_delete_queue_goes_when_its_consumers_connection_closes(
    broker: MemoryBroker,
) -> None:
    broker.declare_queue("temp", auto_delete=True)
    conn = broker.connect()
    conn.consume("temp", Inbox())
    conn.close()
    assert broker.queue_names() == []


async def test_auto_delete_exchange_goes_with_its_last_binding(broker: MemoryBroker) -> None:
    broker.declare_exchange("temp", "topic", auto_delete=True)
    queue(broker, "q")
    bind(broker, "q", "temp", "a")
    broker.unbind("q", "temp", "a")
    assert "temp" not in broker.exchange_names()


async def test_x_expires_deletes_an_unused_queue(broker: MemoryBroker) -> None:
    queue(broker, "idle", **{"x-expires": 50})
    queue(broker, "used", **{"x-expires": 50})
    broker.connect().consume("used", Inbox())
    broker.publish("", "idle", b"publishing is not use")
    await asyncio.sleep(0.03)
    queue(broker, "idle", **{"x-expires": 50})  # a redeclaration restarts the countdown
    await asyncio.sleep(0.03)
    assert "idle" in broker.queue_names()
    await asyncio.sleep(0.05)
    assert "idle" not in broker.queue_names()
    assert "used" in broker.queue_names()


async def test_x_expires_starts_when_the_last_consumer_leaves(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-expires": 20})
    conn = broker.connect()
    tag = conn.consume("q", Inbox())
    await asyncio.sleep(0.03)
    assert "q" in broker.queue_names()
    conn.cancel(tag)
    await asyncio.sleep(0.04)
    assert "q" not in broker.queue_names()


def test_get_purge_and_queue_info(broker: MemoryBroker) -> None:
    queue(broker, "q")
    for body in (b"1", b"2", b"3"):
        broker.publish("", "q", body)
    info = broker.queue_info("q")
    assert (info.name, info.durable, info.exclusive, info.auto_delete) == ("q", True, False, False)
    assert (info.messages_ready, info.messages, info.consumers) == (3, 3, 0)
    got = broker.get("q")
    assert got is not None
    assert got.body == b"1"
    assert bodies(broker, "q") == [b"2", b"3"]
    assert broker.purge("q") == 2
    assert broker.get("q") is None


def test_exchange_info(broker: MemoryBroker) -> None:
    broker.declare_exchange("events", "topic", durable=False)
    info = broker.exchange_info("events")
    assert (info.name, info.type, info.durable, info.auto_delete, info.internal) == (
        "events",
        "topic",
        False,
        False,
        False,
    )


def test_reset_drops_everything(broker: MemoryBroker) -> None:
    exchange(broker, "events")
    queue(broker, "q")
    bind(broker, "q", "events", "#")
    broker.publish("events", "a", b"m")
    conn = broker.connect()
    broker.reset()
    assert broker.queue_names() == []
    assert "events" not in broker.exchange_names()
    assert "" in broker.exchange_names()
    assert conn.closed


async def test_delete_queue_cancels_its_consumers(broker: MemoryBroker) -> None:
    queue(broker, "q")
    broker.publish("", "q", b"m")
    conn = broker.connect()
    cancelled: list[tuple[str, str]] = []
    conn.on_cancel = lambda tag, name: cancelled.append((tag, name))
    held = Inbox(ack=False)
    tag = conn.consume("q", held, prefetch=1)
    (delivery,) = await held.wait_for(1)
    broker.publish("", "q", b"ready")
    assert broker.delete_queue("q") == 1  # the ready message count
    assert cancelled == [(tag, "q")]
    assert "q" not in broker.queue_names()
    await delivery.ack()  # the deleted queue's delivery may still be settled
    await broker.wait_until_idle()


# ---------------------------------------------------------------------------------------------
# TTL and dead-lettering


def dead_letter_setup(broker: MemoryBroker, **ttl_arguments: Any) -> None:
    """``delay`` dead-letters through the default exchange to ``work``."""
    queue(broker, "work")
    queue(
        broker,
        "delay",
        **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work", **ttl_arguments},
    )


async def test_expired_message_is_dead_lettered_with_x_death(broker: MemoryBroker) -> None:
    dead_letter_setup(broker, **{"x-message-ttl": 20})
    inbox = Inbox()
    broker.connect().consume("work", inbox)
    before = datetime.now(UTC).replace(microsecond=0)
    broker.publish("", "delay", b"m", {"event-key": "Order.Created"})
    (delivery,) = await inbox.wait_for(1)
    assert delivery.routing_key == "work"
    assert delivery.exchange == ""
    headers = delivery.headers
    assert headers["event-key"] == "Order.Created"
    assert headers["x-first-death-exchange"] == ""
    assert headers["x-first-death-queue"] == "delay"
    assert headers["x-first-death-reason"] == "expired"
    (death,) = headers["x-death"]
    time = death.pop("time")
    assert isinstance(time, datetime)
    assert time.tzinfo is UTC
    assert before <= time <= datetime.now(UTC)
    assert death == {
        "count": 1,
        "reason": "expired",
        "queue": "delay",
        "exchange": "",
        "routing-keys": ["delay"],
    }


async def test_per_message_expiration_is_recorded_and_removed(broker: MemoryBroker) -> None:
    dead_letter_setup(broker)
    broker.publish("", "delay", b"m", expiration=20)
    inbox = Inbox(ack=False)
    conn = broker.connect()
    tag = conn.consume("work", inbox)
    (delivery,) = await inbox.wait_for(1)
    (death,) = delivery.headers["x-death"]
    assert death["original-expiration"] == "20"
    conn.cancel(tag)
    await delivery.reject(requeue=True)
    (message,) = broker.messages("work")
    assert message.properties.expiration is None


async def test_the_lower_of_queue_and_message_ttl_applies(broker: MemoryBroker) -> None:
    dead_letter_setup(broker, **{"x-message-ttl": 10_000})
    inbox = Inbox()
    broker.connect().consume("work", inbox)
    broker.publish("", "delay", b"m", expiration=20)
    await inbox.wait_for(1, within=1.0)


async def test_zero_ttl_expires_unless_delivered_at_once(broker: MemoryBroker) -> None:
    dead_letter_setup(broker, **{"x-message-ttl": 0})
    broker.publish("", "delay", b"expired")
    assert bodies(broker, "work") == [b"expired"]
    inbox = Inbox()
    broker.connect().consume("delay", inbox)
    broker.publish("", "delay", b"delivered")
    await inbox.wait_for(1)
    assert inbox.bodies == [b"delivered"]


async def test_only_the_head_of_a_queue_expires(broker: MemoryBroker) -> None:
    dead_letter_setup(broker)
    broker.publish("", "delay", b"forever")
    broker.publish("", "delay", b"short", expiration=10)
    await asyncio.sleep(0.03)
    assert bodies(broker, "delay") == [b"forever", b"short"]  # stuck behind the head
    inbox = Inbox()
    broker.connect().consume("work", inbox)
    assert broker.get("delay") is not None  # removing the head lets the next one expire
    await inbox.wait_for(1)
    assert inbox.bodies == [b"short"]
    assert bodies(broker, "delay") == []


async def test_expired_message_without_dead_letter_exchange_is_dropped(
    broker: MemoryBroker,
) -> None:
    queue(broker, "q", **{"x-message-ttl": 10})
    broker.publish("", "q", b"m")
    await asyncio.sleep(0.03)
    assert broker.messages("q") == []


async def test_dead_lettering_to_a_missing_exchange_drops(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-dead-letter-exchange": "gone"})
    held = Inbox(ack=False)
    broker.connect().consume("q", held)
    broker.publish("", "q", b"m")
    (delivery,) = await held.wait_for(1)
    await delivery.reject(requeue=False)
    assert broker.queue_info("q").messages == 0


async def test_rejected_message_keeps_its_routing_key_without_dlrk(
    broker: MemoryBroker,
) -> None:
    exchange(broker, "events")
    exchange(broker, "dlx")
    queue(broker, "service", **{"x-dead-letter-exchange": "dlx"})
    queue(broker, "dead")
    bind(broker, "service", "events", "Order.*")
    bind(broker, "dead", "dlx", "Order.Created")
    held = Inbox(ack=False)
    broker.connect().consume("service", held)
    broker.publish("events", "Order.Created", b"m", expiration=60_000)
    (delivery,) = await held.wait_for(1)
    await delivery.reject(requeue=False)
    (message,) = broker.messages("dead")
    assert message.routing_key == "Order.Created"
    assert message.exchange == "dlx"
    assert message.redelivered is False
    (death,) = message.headers["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == "service"
    assert death["exchange"] == "events"
    assert death["routing-keys"] == ["Order.Created"]
    assert death["original-expiration"] == "60000"
    assert message.headers["x-first-death-reason"] == "rejected"


async def test_bouncing_twice_through_a_ttl_queue_counts_two(broker: MemoryBroker) -> None:
    """A retry loop: the handler moves the message back to the delay queue with its headers."""
    dead_letter_setup(broker, **{"x-message-ttl": 20})
    received: list[Delivery] = []
    finished = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        received.append(delivery)
        if len(received) < 2:
            broker.publish("", "delay", delivery.body, delivery.headers)
        else:
            finished.set()
        await delivery.ack()

    broker.connect().consume("work", handler)
    broker.publish("", "delay", b"m")
    async with asyncio.timeout(2):
        await finished.wait()
    first, second = received
    (first_death,) = first.headers["x-death"]
    (second_death,) = second.headers["x-death"]
    assert first_death["count"] == 1
    assert second_death["count"] == 2
    assert second_death["reason"] == "expired"
    assert second_death["queue"] == "delay"
    assert second_death["time"] == first_death["time"]  # the entry keeps its first time
    assert second.headers["x-first-death-queue"] == "delay"


async def test_x_death_entries_are_newest_first(broker: MemoryBroker) -> None:
    """Expired from ``delay``, rejected from ``work`` into ``dlq``: two entries."""
    queue(broker, "dlq")
    queue(broker, "work", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    queue(
        broker,
        "delay",
        **{
            "x-message-ttl": 10,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "work",
        },
    )
    held = Inbox(ack=False)
    broker.connect().consume("work", held)
    broker.publish("", "delay", b"m")
    (delivery,) = await held.wait_for(1)
    await delivery.reject(requeue=False)
    (message,) = broker.messages("dlq")
    deaths = message.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        ("work", "rejected", 1),
        ("delay", "expired", 1),
    ]
    assert deaths[0]["routing-keys"] == ["work"]
    assert message.headers["x-first-death-queue"] == "delay"


async def test_a_fully_automatic_dead_letter_cycle_drops_the_message(
    broker: MemoryBroker,
) -> None:
    queue(
        broker,
        "loop",
        **{"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"},
    )
    broker.publish("", "loop", b"m")
    await asyncio.sleep(0.04)
    assert broker.messages("loop") == []


async def test_a_cycle_with_a_rejection_is_allowed(broker: MemoryBroker) -> None:
    """work --rejected--> delay --expired--> work: delivered again, as RabbitMQ does."""
    queue(broker, "work", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "delay"})
    queue(
        broker,
        "delay",
        **{"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work"},
    )
    seen: list[Delivery] = []
    twice = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) == 2:
            twice.set()
            await delivery.ack()
        else:
            await delivery.reject(requeue=False)

    broker.connect().consume("work", handler)
    broker.publish("", "work", b"m")
    async with asyncio.timeout(2):
        await twice.wait()
    deaths = seen[1].headers["x-death"]
    assert [(d["queue"], d["reason"]) for d in deaths] == [
        ("delay", "expired"),
        ("work", "rejected"),
    ]


def test_max_length_drops_from_the_head_and_dead_letters(broker: MemoryBroker) -> None:
    queue(broker, "overflow")
    queue(
        broker,
        "q",
        **{
            "x-max-length": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "overflow",
        },
    )
    for body in (b"1", b"2", b"3"):
        broker.publish("", "q", body)
    assert bodies(broker, "q") == [b"2", b"3"]
    (dropped,) = broker.messages("overflow")
    assert dropped.body == b"1"
    assert dropped.headers["x-death"][0]["reason"] == "maxlen"


def test_max_length_reject_publish_nacks(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    broker.publish("", "q", b"1")
    with pytest.raises(PublishError, match="'q' is full"):
        broker.publish("", "q", b"2")
    assert bodies(broker, "q") == [b"1"]


def test_max_length_reject_publish_dlx_dead_letters_the_refused(broker: MemoryBroker) -> None:
    queue(broker, "overflow")
    queue(
        broker,
        "q",
        **{
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "overflow",
        },
    )
    broker.publish("", "q", b"1")
    with pytest.raises(PublishError):
        broker.publish("", "q", b"2")
    assert bodies(broker, "q") == [b"1"]
    assert bodies(broker, "overflow") == [b"2"]


async def test_max_length_counts_ready_messages_only(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    held = Inbox(ack=False)
    broker.connect().consume("q", held, prefetch=1)
    broker.publish("", "q", b"1")  # delivered at once: unacked, not ready
    broker.publish("", "q", b"2")
    await held.wait_for(1)
    assert bodies(broker, "q") == [b"2"]


def test_max_length_bytes_counts_the_bodies_of_ready_messages(broker: MemoryBroker) -> None:
    dead = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    queue(broker, "dead")
    queue(broker, "drop", **{"x-max-length-bytes": 10, **dead})
    queue(broker, "reject", **{"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    refused = []
    for body in (b"aaaa", b"bbbb", b"cccc", b"", b"dddddddddddd"):
        broker.publish("", "drop", body)
        try:
            broker.publish("", "reject", body)
        except PublishError:
            refused.append(body)
    # drop-head drops from the head until the bodies fit, the newest one too if it must.
    assert bodies(broker, "drop") == []
    assert bodies(broker, "dead") == [b"aaaa", b"bbbb", b"cccc", b"", b"dddddddddddd"]
    # reject-publish refuses what would not fit, and takes what still does.
    assert bodies(broker, "reject") == [b"aaaa", b"bbbb", b""]
    assert refused == [b"cccc", b"dddddddddddd"]


async def test_a_requeue_over_max_length_drops_the_head(broker: MemoryBroker) -> None:
    queue(broker, "dead")
    queue(
        broker,
        "q",
        **{"x-max-length": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"},
    )
    held = Inbox(ack=False)
    broker.connect().consume("q", held, prefetch=1)
    for body in (b"1", b"2", b"3"):
        broker.publish("", "q", body)
    (first,) = await held.wait_for(1)
    await first.reject(requeue=True)  # back at the head of a full queue: dropped at once
    await held.wait_for(2)
    assert held.bodies == [b"1", b"2"]
    assert bodies(broker, "dead") == [b"1"]
    assert bodies(broker, "q") == [b"3"]


async def test_a_closing_connection_requeues_over_max_length(broker: MemoryBroker) -> None:
    queue(broker, "dead")
    queue(
        broker,
        "q",
        **{"x-max-length": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"},
    )
    held = Inbox(ack=False)
    conn = broker.connect()
    conn.consume("q", held, prefetch=2)
    for body in (b"1", b"2", b"3", b"4"):
        broker.publish("", "q", body)
    await held.wait_for(2)
    conn.close()
    assert bodies(broker, "q") == [b"3", b"4"]
    assert bodies(broker, "dead") == [b"1", b"2"]


# ---------------------------------------------------------------------------------------------
# Single active consumer


async def test_single_active_consumer_gets_everything_until_it_goes(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-single-active-consumer": True})
    leaving_conn, staying_conn = broker.connect(), broker.connect()
    first, second, third = Inbox(ack=False), Inbox(ack=False), Inbox()
    leaving_conn.consume("q", first, prefetch=2)
    staying_conn.consume("q", second, prefetch=2)
    third_tag = staying_conn.consume("q", third, prefetch=2)
    for body in (b"1", b"2", b"3", b"4"):
        broker.publish("", "q", body)
    await first.wait_for(2)
    await asyncio.sleep(0)
    assert (first.bodies, second.bodies, third.bodies) == ([b"1", b"2"], [], [])
    leaving_conn.close()  # its deliveries go back, to the next consumer in line
    await second.wait_for(2)
    await asyncio.sleep(0)
    assert (second.bodies, third.bodies) == ([b"1", b"2"], [])
    assert [delivery.redelivered for delivery in second.deliveries] == [True, True]
    staying_conn.cancel(third_tag)
    assert third.bodies == []


async def test_single_active_consumer_hands_over_on_cancel(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-single-active-consumer": True})
    conn = broker.connect()
    first, second = Inbox(ack=False), Inbox()
    first_tag = conn.consume("q", first, prefetch=1)
    conn.consume("q", second)
    for body in (b"1", b"2", b"3"):
        broker.publish("", "q", body)
    await first.wait_for(1)
    await asyncio.sleep(0)
    assert second.bodies == []  # waiting, though it has room
    conn.cancel(first_tag)
    await second.wait_for(2)
    assert second.bodies == [b"2", b"3"]


def test_single_active_consumer_queue_refuses_exclusive_consumers(broker: MemoryBroker) -> None:
    queue(broker, "q", **{"x-single-active-consumer": True})
    with pytest.raises(BrokerError, match="in exclusive use") as error:
        broker.connect().consume("q", Inbox(), exclusive=True)
    assert reply_code(error) == 403


# ---------------------------------------------------------------------------------------------
# Quorum queues

QUORUM = {"x-queue-type": "quorum"}


def test_quorum_queue_declarations_are_checked(broker: MemoryBroker) -> None:
    conn = broker.connect()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"durable": False, "arguments": QUORUM}, "invalid property 'non-durable'"),
        ({"auto_delete": True, "arguments": QUORUM}, "invalid property 'auto-delete'"),
        ({"exclusive": True, "arguments": QUORUM}, "invalid property 'exclusive-owner'"),
        (
            {"arguments": {**QUORUM, "x-max-priority": 5}},
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type "
            "rabbit_quorum_queue",
        ),
        ({"arguments": {**QUORUM, "x-queue-mode": "lazy"}}, "'x-queue-mode'"),
    ]
    for settings, text in cases:
        with pytest.raises(BrokerError, match=text) as error:
            broker.declare_queue("q", **settings, connection=conn)
        assert reply_code(error) == 406
    assert broker.queue_names() == []


def test_a_missing_queue_type_is_classic_only(broker: MemoryBroker) -> None:
    queue(broker, "classic")
    queue(broker, "classic", **{"x-queue-type": "classic"})
    queue(broker, "quorum", **QUORUM)
    with pytest.raises(BrokerError) as error:
        queue(broker, "quorum")
    assert str(error.value).endswith(
        "'x-queue-type' for queue 'quorum' in vhost '/': received none but current is the "
        "value 'quorum' of type 'longstr'"
    )


async def test_quorum_queue_requeues_to_the_back_and_counts(broker: MemoryBroker) -> None:
    queue(broker, "q", **QUORUM)
    for body in (b"1", b"2", b"3"):
        broker.publish("", "q", body)
    held = Inbox(ack=False)
    broker.connect().consume("q", held, prefetch=1)
    (first,) = await held.wait_for(1)
    assert "x-delivery-count" not in first.headers
    await first.reject(requeue=True)
    await held.wait_for(2)
    await held.deliveries[1].ack()
    await held.wait_for(3)
    await held.deliveries[2].ack()
    again = (await held.wait_for(4))[3]
    assert held.bodies == [b"1", b"2", b"3", b"1"]
    assert (again.redelivered, again.headers["x-delivery-count"]) == (True, 1)


def test_basic_get_from_a_quorum_queue_always_counts(broker: MemoryBroker) -> None:
    queue(broker, "q", **QUORUM)
    broker.publish("", "q", b"1")
    message = broker.get("q")
    assert message is not None
    assert message.headers == {"x-delivery-count": 0}


async def test_quorum_queue_delivery_limit_dead_letters(broker: MemoryBroker) -> None:
    queue(broker, "dead")
    queue(
        broker,
        "q",
        **QUORUM,
        **{
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dead",
        },
    )
    broker.publish("", "q", b"poison")
    held = Inbox(ack=False)
    broker.connect().consume("q", held, prefetch=1)
    await (await held.wait_for(1))[0].reject(requeue=True)
    await (await held.wait_for(2))[1].reject(requeue=True)
    (dead,) = broker.messages("dead")
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    assert "x-delivery-count" not in dead.headers


def test_quorum_queue_reject_publish_goes_one_over_then_waits_for_80_percent(
    broker: MemoryBroker,
) -> None:
    queue(broker, "q", **QUORUM, **{"x-max-length": 2, "x-overflow": "reject-publish"})
    outcomes = []
    for body in (b"1", b"2", b"3", b"4"):
        try:
            broker.publish("", "q", body)
            outcomes.append("ack")
        except PublishError:
            outcomes.append("nack")
    assert outcomes == ["ack", "ack", "ack", "nack"]
    broker.get("q")
    with pytest.raises(PublishError):
        broker.publish("", "q", b"5")  # 2 left: above 80% of 2
    broker.get("q")
    broker.publish("", "q", b"6")
    assert bodies(broker, "q") == [b"3", b"6"]


# ---------------------------------------------------------------------------------------------
# Registry and URLs


def test_brokers_are_found_by_url(broker: MemoryBroker) -> None:
    assert broker.url.startswith("memory://")
    assert broker_for_url(broker.url) is broker
    assert broker_for_url("memory://") is broker_for_url("memory:///")
    assert broker_for_url("memory://") is broker_for_url("memory://default")
    created = broker_for_url("memory://test-memory-broker-registry")
    assert created.name == "test-memory-broker-registry"
    assert broker_for_url("memory://test-memory-broker-registry") is created


def test_broker_names_are_unique(broker: MemoryBroker) -> None:
    with pytest.raises(ConfigurationError, match="already exists"):
        MemoryBroker(broker.name)
    assert MemoryBroker().name != broker.name


@pytest.mark.parametrize("url", ["amqp://localhost/", "memory://x/vhost", "memory://x?a=1"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        MemoryOpener(url)


def MemoryTransport(url: str, publish_timeout: float = 0.2) -> Transport:
    """The transport a Connection uses for ``url``: reconnecting, over memory sessions."""
    return transport_for(
        [url],
        connection_name="test",
        connect_timeout=1.0,
        publish_timeout=publish_timeout,
        reconnect_timeout=5.0,
    )


# ---------------------------------------------------------------------------------------------
# The transport


async def test_transport_declares_consumes_and_publishes(broker: MemoryBroker) -> None:
    transport = MemoryTransport(broker.url)
    await transport.connect()
    topology = Topology()
    topology.add_exchange(ExchangeSpec("events.topic.exchange", "topic"))
    topology.add_queue(QueueSpec("events.topic.exchange.queue.svc", arguments={"x-expires": 5000}))
    topology.add_binding(
        BindingSpec("events.topic.exchange.queue.svc", "events.topic.exchange", "Order.#")
    )
    await transport.declare(topology)
    inbox = Inbox()
    await transport.consume(ConsumerSpec("events.topic.exchange.queue.svc", inbox, prefetch=20))
    await transport.publish(
        "events.topic.exchange",
        "Order.Created",
        b"{}",
        {"service": "orders"},
        properties=OutgoingProperties(content_type="application/json"),
    )
    (delivery,) = await inbox.wait_for(1)
    assert delivery.headers == {"service": "orders"}
    assert delivery.content_type == "application/json"
    await broker.wait_until_idle()
    await transport.close()


async def test_transport_mandatory_unroutable_publish_raises(broker: MemoryBroker) -> None:
    transport = MemoryTransport(broker.url)
    await transport.connect()
    with pytest.raises(PublishError, match="'amq.topic'.*'Nobody.Listens'.*unroutable"):
        await transport.publish("amq.topic", "Nobody.Listens", b"{}", {}, mandatory=True)
    await transport.publish("amq.topic", "Nobody.Listens", b"{}", {})  # not mandatory: dropped
    await transport.close()


async def test_transport_publish_needs_a_connection(broker: MemoryBroker) -> None:
    transport = MemoryTransport(broker.url, publish_timeout=0.05)
    with pytest.raises(PublishError, match="not confirmed within 0.05s"):
        await transport.publish("", "q", b"m", {})
    with pytest.raises(BrokerConnectionError, match="not connected"):
        await transport.declare(Topology())
    await transport.connect()
    await transport.close()
    with pytest.raises(PublishError, match="connection is closed"):
        await transport.publish("", "q", b"m", {})


async def test_transport_close_is_idempotent_and_tells_callbacks_once(
    broker: MemoryBroker,
) -> None:
    transport = MemoryTransport(broker.url)
    calls: list[BaseException | None] = []
    transport.add_close_callback(calls.append)
    await transport.connect()
    await transport.close()
    await transport.close()
    assert calls == [None]


async def test_transport_close_requeues_unsettled_deliveries(broker: MemoryBroker) -> None:
    queue(broker, "q")
    transport = MemoryTransport(broker.url)
    await transport.connect()
    held = Inbox(ack=False)
    await transport.consume(ConsumerSpec("q", held, prefetch=1))
    broker.publish("", "q", b"m")
    (delivery,) = await held.wait_for(1)
    await transport.close()
    await delivery.ack()  # ignored: the message was requeued when the connection closed
    (message,) = broker.messages("q")
    assert message.redelivered is True


async def test_transport_exclusive_queue_goes_with_it(broker: MemoryBroker) -> None:
    transport = MemoryTransport(broker.url)
    await transport.connect()
    topology = Topology()
    topology.add_queue(QueueSpec("transient", durable=False, auto_delete=True, exclusive=True))
    await transport.declare(topology)
    other = MemoryTransport(broker.url)
    await other.connect()
    with pytest.raises(BrokerError) as error:
        await other.declare(topology)
    assert reply_code(error) == 405
    await transport.close()
    assert "transient" not in broker.queue_names()
    await other.declare(topology)
    await other.close()


async def test_transport_exclusive_consumer_flag(broker: MemoryBroker) -> None:
    queue(broker, "q")
    transport = MemoryTransport(broker.url)
    await transport.connect()
    await transport.consume(ConsumerSpec("q", Inbox(), prefetch=1))
    with pytest.raises(BrokerError) as error:
        await transport.consume(ConsumerSpec("q", Inbox(), prefetch=1, exclusive=True))
    assert reply_code(error) == 403
    await transport.close()


async def test_stop_consuming_lets_in_flight_deliveries_settle(broker: MemoryBroker) -> None:
    queue(broker, "q")
    transport = MemoryTransport(broker.url)
    await transport.connect()
    held = Inbox(ack=False)
    await transport.consume(ConsumerSpec("q", held, prefetch=5))
    broker.publish("", "q", b"1")
    (delivery,) = await held.wait_for(1)
    await transport.stop_consuming()
    broker.publish("", "q", b"2")
    await delivery.ack()
    await broker.wait_until_idle()
    assert held.bodies == [b"1"]
    assert bodies(broker, "q") == [b"2"]
    await transport.close()


async def test_close_all_connections_is_reported_then_recovered(broker: MemoryBroker) -> None:
    queue(broker, "q")
    transport = MemoryTransport(broker.url)
    errors: list[BaseException | None] = []
    transport.add_close_callback(errors.append)
    await transport.connect()
    held = Inbox(ack=False)
    await transport.consume(ConsumerSpec("q", held, prefetch=1))
    broker.publish("", "q", b"m")
    (delivery,) = await held.wait_for(1)
    assert broker.close_all_connections() == 1
    (error,) = errors
    assert isinstance(error, BrokerConnectionError)
    assert "CONNECTION_FORCED" in str(error)
    await delivery.ack()  # ignored: requeued by the broker ...
    (again,) = (await held.wait_for(2))[1:]  # ... and redelivered to the restored consumer
    assert again.redelivered is True
    await transport.publish("", "q", b"after", {})  # publishing works again too
    await transport.close()
    assert errors == [error, None]


async def test_deleted_queue_is_restored_with_its_consumer(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    transport = MemoryTransport(broker.url)
    await transport.connect()
    topology = Topology()
    topology.add_queue(QueueSpec("q"))
    await transport.declare(topology)
    inbox = Inbox()
    await transport.consume(ConsumerSpec("q", inbox, prefetch=1))
    with caplog.at_level(logging.WARNING):
        broker.delete_queue("q")
        await eventually(
            lambda: "q" in broker.queue_names() and broker.queue_info("q").consumers == 1
        )
    assert "cancelled the consumer of 'q'" in caplog.text
    broker.publish("", "q", b"after")
    assert (await inbox.wait_for(1))[0].body == b"after"
    await transport.stop_consuming()
    await transport.close()


async def test_two_transports_with_one_url_share_a_broker() -> None:
    url = "memory://test-memory-shared"
    sender, receiver = MemoryTransport(url), MemoryTransport(url)
    await sender.connect()
    await receiver.connect()
    topology = Topology()
    topology.add_queue(QueueSpec("shared"))
    await receiver.declare(topology)
    inbox = Inbox()
    await receiver.consume(ConsumerSpec("shared", inbox, prefetch=1))
    await sender.publish("", "shared", b"hello", {})
    assert (await inbox.wait_for(1))[0].body == b"hello"
    await sender.close()
    await receiver.close()
    broker_for_url(url).reset()


# ---------------------------------------------------------------------------------------------
# What the wire carries: limits and header values, as RabbitMQ and pamqp treat them


def test_limits_default_to_rabbitmqs_and_are_checked() -> None:
    broker = MemoryBroker()
    try:
        assert (broker.frame_max, broker.max_message_size) == (131072, 134217728)
    finally:
        broker.reset()
    with pytest.raises(ConfigurationError, match="frame_max must be an int of at least 4096"):
        MemoryBroker(frame_max=100)
    with pytest.raises(ConfigurationError, match="max_message_size must be an int from 1 to"):
        MemoryBroker(max_message_size=2**30)


def test_a_body_over_max_message_size_is_refused() -> None:
    broker = MemoryBroker(max_message_size=10)
    try:
        queue(broker, "q")
        assert broker.publish("", "q", b"x" * 10) == 1
        with pytest.raises(BrokerError) as error:
            broker.publish("", "q", b"x" * 11)
        assert str(error.value) == (
            "406: PRECONDITION_FAILED - message size 11 is larger than configured max size 10"
        )
        assert broker.queue_info("q").messages == 1
    finally:
        broker.reset()


def test_a_header_frame_over_frame_max_is_a_frame_error(broker: MemoryBroker) -> None:
    queue(broker, "q")
    with pytest.raises(BrokerError, match=r"501: FRAME_ERROR .*\{frame_too_large,\d+,131064\}"):
        broker.publish("", "q", b"m", {"big": "y" * 140_000})
    assert broker.queue_info("q").messages == 0


def test_headers_are_stored_as_pamqp_decodes_them(broker: MemoryBroker) -> None:
    queue(broker, "q")
    when = datetime(2024, 1, 2, 3, 4, 5, 678901)
    broker.publish(
        "",
        "q",
        b"m",
        {"f": 0.1, "t": when, "i": 2**40, "foreign": b"\xff", "utf8": b"ok", "l": [1, "two"]},
    )
    [message] = broker.messages("q")
    assert message.headers == {
        "f": 0.10000000149011612,
        "t": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "i": 2**40,
        "foreign": b"\xff",
        "utf8": "ok",
        "l": [1, "two"],
    }


@pytest.mark.parametrize("value", [(1,), 2**64, "a\ud800", object()])
def test_an_unencodable_header_is_refused_naming_it(broker: MemoryBroker, value: Any) -> None:
    queue(broker, "q")
    with pytest.raises(PublishError, match="header 'bad' cannot be encoded"):
        broker.publish("", "q", b"m", {"ok": 1, "bad": value})
    assert broker.queue_info("q").messages == 0


async def test_a_foreign_string_that_is_not_utf8_reaches_consumers_as_bytes(
    broker: MemoryBroker,
) -> None:
    queue(broker, "q")
    inbox = Inbox()
    broker.connect().consume("q", inbox)
    broker.publish("", "q", b"m", {"raw": b"\xc3(", "nested": {"k": [b"\x80"]}})
    [delivery] = await inbox.wait_for(1)
    assert delivery.headers == {"raw": b"\xc3(", "nested": {"k": [b"\x80"]}}
    assert type(delivery.headers["raw"]) is bytes


async def test_transport_refusals_are_publish_errors_as_on_rabbitmq() -> None:
    broker = MemoryBroker(max_message_size=10)
    transport = MemoryTransport(broker.url)
    try:
        await transport.connect()
        assert transport.frame_max == 131072
        with pytest.raises(PublishError) as error:
            await transport.publish("amq.topic", "k", b"x" * 11, {})
        assert str(error.value) == (
            "406: publishing to 'amq.topic': PRECONDITION_FAILED - message size 11 is larger "
            "than configured max size 10"
        )
        with pytest.raises(PublishError, match="no exchange 'nowhere'"):
            await transport.publish("nowhere", "k", b"{}", {})
        with pytest.raises(PublishError, match="frame_max of 131072 bytes"):
            await transport.publish("amq.topic", "k", b"{}", {"big": "y" * 140_000})
        await transport.publish("amq.topic", "k", b"{}", {})
    finally:
        await transport.close()
        broker.reset()
