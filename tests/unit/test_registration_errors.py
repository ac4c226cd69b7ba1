"""Every bad setup is refused before anything touches the broker, naming the culprit.

The connections point at a port where nothing listens: reaching the broker would raise
BrokerConnectionError, so a ConfigurationError proves the check came first.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from amqp_events import (
    BrokerConnectionError,
    ConfigurationError,
    Connection,
    EventRouter,
    Headers,
    Metadata,
    Publisher,
    PublishError,
    RetryPolicy,
    Route,
    event_stream_consumer,
    event_stream_publisher,
    service_request_consumer,
    stream_consumer,
    stream_publisher,
    transient_event_stream_consumer,
    transient_stream_consumer,
    with_message_logger,
    with_prefetch_limit,
    with_queue_options,
    with_retry_policy,
    with_type_mapping,
)

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


class OrderCreated(BaseModel):
    id: str


class OrderUpdated(BaseModel):
    id: str


async def on_created(event: OrderCreated) -> None:
    pass


async def test_handler_without_event_type() -> None:
    async def untyped(event):  # type: ignore[no-untyped-def]
        pass

    conn = Connection("svc", NOWHERE)
    with pytest.raises(ConfigurationError, match=r"untyped for 'Order.Created' has no event type"):
        await conn.start(event_stream_consumer("Order.Created", untyped))


async def test_handler_with_non_event_annotation() -> None:
    async def takes_int(event: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match="takes_int.*not an event type"):
        await Connection("svc", NOWHERE).start(event_stream_consumer("Order.Created", takes_int))


def test_sync_handler_refused_at_registration() -> None:
    def sync(event: OrderCreated) -> None:
        pass

    conn = Connection("svc", NOWHERE)
    with pytest.raises(ConfigurationError, match="sync for 'Order.Created' must be an async"):
        # A sync handler on purpose: the refusal at runtime is what is tested.
        conn.event_stream_consumer("Order.Created")(sync)  # type: ignore[type-var]


def test_handler_with_too_many_arguments() -> None:
    async def four(event: OrderCreated, headers: Headers, metadata: Metadata, extra: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match="four for 'Order.Created' takes 4 required"):
        event_stream_consumer("Order.Created", four)


def test_a_third_argument_must_be_the_metadata() -> None:
    async def three(event: OrderCreated, headers: Headers, extra: int) -> None:
        pass

    async def swapped(event: OrderCreated, metadata: Metadata, headers: Headers) -> None:
        pass

    for handler in (three, swapped):
        with pytest.raises(ConfigurationError, match="must be \\(event, headers, metadata"):
            event_stream_consumer("Order.Created", handler)


async def test_overlapping_keys_in_one_queue() -> None:
    async def other(event: OrderCreated) -> None:
        pass

    conn = Connection("svc", NOWHERE)
    conn.event_stream_consumer("Order.#")(on_created)
    conn.event_stream_consumer("Order.Created")(other)
    with pytest.raises(ConfigurationError, match=r"'Order.#' \(.*on_created\) and 'Order.Created'"):
        await conn.start()


async def test_overlap_across_routers_is_found_too() -> None:
    router = EventRouter()
    router.event_stream_consumer("Order.*")(on_created)
    conn = Connection("svc", NOWHERE)
    conn.event_stream_consumer("Order.Created")(on_created)
    conn.include(router)
    with pytest.raises(
        ConfigurationError, match="overlap on queue 'events.topic.exchange.queue.svc'"
    ):
        await conn.start()


async def test_same_key_in_different_services_is_fine_but_transients_get_own_queues() -> None:
    conn = Connection("svc", "memory://registration-ok")
    conn.event_stream_consumer("Order.Created")(on_created)
    conn.transient_event_stream_consumer("Order.Created")(on_created)
    conn.transient_event_stream_consumer("Order.#")(on_created)
    await conn.start()
    await conn.close()


def test_type_routed_twice() -> None:
    with pytest.raises(ConfigurationError, match="OrderCreated declared twice"):
        Publisher(Route(OrderCreated, "Order.Created"), Route(OrderCreated, "Order.New"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost/", "unknown scheme 'http'"),
        ("amqp://guest:secret@localhost:99999/", "(?i)port"),
        ("amqp:///", "names no host"),
        ("", "non-empty"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Connection("svc", url)
    assert "secret" not in str(info.value)


async def test_reserved_service_header() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with Connection("svc", "memory://reserved-header") as conn:
        await conn.start(event_stream_publisher(publisher))
        with pytest.raises(ConfigurationError, match="header 'service' is reserved"):
            await publisher.publish(OrderCreated(id="1"), headers={"service": "other"})
        with pytest.raises(ConfigurationError, match="header 'blob'.*a bytes value"):
            await publisher.publish(OrderCreated(id="1"), headers={"blob": b"raw"})


async def test_publish_of_unrouted_type() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with Connection("svc", "memory://unrouted") as conn:
        await conn.start(event_stream_publisher(publisher))
        with pytest.raises(ConfigurationError, match=r"no route for OrderUpdated.*Order\.Created"):
            await publisher.publish(OrderUpdated(id="1"))


async def test_publish_before_start() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    with pytest.raises(PublishError, match="not attached to a started connection"):
        await publisher.publish(OrderCreated(id="1"))


class NeverRoutedA(BaseModel):
    id: str


class NeverRoutedB(BaseModel):
    id: str


async def test_union_annotation_without_mapping() -> None:
    async def either(event: NeverRoutedA | NeverRoutedB) -> None:
        pass

    with pytest.raises(
        ConfigurationError, match="no type of the union is mapped to 'Order.Created'"
    ):
        await Connection("svc", NOWHERE).start(event_stream_consumer("Order.Created", either))


async def test_union_routes_made_elsewhere_in_the_process_do_not_count() -> None:
    Route(NeverRoutedA, "A.One")

    async def either(event: NeverRoutedA | NeverRoutedB) -> None:
        pass

    with pytest.raises(
        ConfigurationError, match="NeverRoutedA, NeverRoutedB have no route on this connection"
    ):
        await Connection("svc", NOWHERE).start(event_stream_consumer("A.#", either))


async def test_union_whose_routes_miss_the_pattern() -> None:
    async def either(event: NeverRoutedA | NeverRoutedB) -> None:
        pass

    routes = with_type_mapping(Route(NeverRoutedA, "A.One"), Route(NeverRoutedB, "B.One"))
    with pytest.raises(ConfigurationError, match="none of their routes on this connection"):
        await Connection("svc", NOWHERE).start(routes, event_stream_consumer("C.#", either))


async def test_publish_after_close_says_the_connection_was_closed() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with Connection("orders", "memory://closed-publisher") as conn:
        await conn.start(event_stream_publisher(publisher))
    with pytest.raises(PublishError, match="its connection 'orders' was closed"):
        await publisher.publish(OrderCreated(id="1"))


async def test_publish_of_a_dict_does_not_suggest_a_route_for_dict() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with Connection("svc", "memory://dict-publish") as conn:
        await conn.start(event_stream_publisher(publisher))
        with pytest.raises(ConfigurationError) as refused:
            await publisher.publish({"id": "1"})  # type: ignore[arg-type]
    assert "cannot publish a dict: an event is an instance of a pydantic model" in str(
        refused.value
    )
    assert "Route(dict" not in str(refused.value)


@pytest.mark.parametrize("limit", [0, -1, 70000, True, "20"])
def test_prefetch_limit_bounds(limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="with_prefetch_limit"):
        with_prefetch_limit(limit)


async def test_publisher_attached_twice() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    with pytest.raises(ConfigurationError, match="set up twice"):
        await Connection("svc", NOWHERE).start(
            event_stream_publisher(publisher), event_stream_publisher(publisher)
        )


def test_blank_service_name() -> None:
    with pytest.raises(ConfigurationError, match="service name"):
        Connection(" ", "memory://")


async def test_registration_after_start_is_refused() -> None:
    async with Connection("svc", "memory://late") as conn:
        await conn.start()
        with pytest.raises(ConfigurationError, match="cannot register a consumer"):
            conn.event_stream_consumer("Order.Created")


# A retry expires from <queue>.retry.<ms> back into <queue> by broker dead-lettering, which
# nobody confirms: a full max_length queue would drop it silently.


async def test_max_length_with_the_default_retry_policy_is_refused() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"queue 'events.topic.exchange.queue.svc' has with_queue_options\(max_length=5\)"
        r".*on_created \('Order.Created'\).*'events.topic.exchange.queue.svc.retry.1000'"
        r".*drop it silently.*RetryPolicy\(attempts=1\).*or drop max_length",
    ):
        await Connection("svc", NOWHERE).start(
            event_stream_consumer("Order.Created", on_created), with_queue_options(max_length=5)
        )


async def test_max_length_with_one_retrying_handler_is_refused() -> None:
    async def on_updated(event: OrderUpdated) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"on_updated \('Order.Updated'\) retry"):
        await Connection("svc", NOWHERE).start(
            with_retry_policy(RetryPolicy(attempts=1)),
            event_stream_consumer("Order.Created", on_created),
            event_stream_consumer("Order.Updated", on_updated, retry=RetryPolicy(attempts=2)),
            with_queue_options(max_length=5, overflow="reject-publish-dlx"),
        )


async def test_max_length_on_a_request_queue_with_retries_is_refused() -> None:
    async def answer(event: OrderCreated) -> OrderUpdated:
        return OrderUpdated(id=event.id)

    with pytest.raises(ConfigurationError, match="queue 'svc.direct.exchange.request.queue'"):
        await Connection("svc", NOWHERE).start(
            service_request_consumer("Order.Created", answer), with_queue_options(max_length=5)
        )


async def test_max_length_without_retries_passes_the_checks() -> None:
    # attempts=1 dead-letters at the first failure, by a confirmed publish: nothing to lose.
    # The check passed when the broker (nowhere) is reached.
    with pytest.raises(BrokerConnectionError):
        await Connection("svc", NOWHERE, connect_timeout=1).start(
            with_retry_policy(RetryPolicy(attempts=1)),
            event_stream_consumer("Order.Created", on_created),
            # transient queues get no queue options, so their retries are not at risk
            transient_event_stream_consumer("Order.#", on_created, retry=RetryPolicy()),
            with_queue_options(max_length=5),
        )


def test_drop_head_overflow_is_refused() -> None:
    with pytest.raises(
        ConfigurationError,
        match="'drop-head' discards the oldest messages of a full queue silently; use "
        "'reject-publish'.*publishers see PublishError",
    ):
        with_queue_options(max_length=5, overflow="drop-head")


# -- goamqp parity and the connection's lifecycle (issue 15) -----------------------------------


def test_connection_without_url_needs_amqp_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)
    with pytest.raises(ConfigurationError, match=r"no broker URL: pass url=.*AMQP_URL.*memory://"):
        Connection("svc")


def test_connection_without_url_takes_amqp_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://guest:secret@rabbit:5672/")
    conn = Connection("svc")
    assert conn.url == "amqp://guest:***@rabbit:5672/"
    assert Connection("svc", "memory://explicit").url == "memory://explicit"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda: stream_publisher("events.topic.exchange", Publisher()),
            r"'events.topic.exchange' is an exchange name; pass the stream's name 'events'",
        ),
        (lambda: stream_consumer("", "A", on_created), "the stream must be a non-empty name"),
        (
            lambda: stream_consumer("orders.topic.exchange", "A", on_created),
            "pass the stream's name 'orders'",
        ),
        (
            lambda: event_stream_consumer("A", on_created, queue_suffix=""),
            "queue_suffix must be a non-empty str",
        ),
        (
            lambda: transient_stream_consumer("orders", "A", on_created, queue_suffix=""),
            "transient_stream_consumer: queue_suffix must be a non-empty str",
        ),
        (lambda: with_message_logger(42), "with_message_logger needs a callable"),  # type: ignore[arg-type]
    ],
)
def test_stream_setups_refuse_traps(setup: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        setup()


def test_the_exchange_parameter_is_gone() -> None:
    """A full exchange name was a trap (goamqp takes a stream name): use the stream setups."""
    with pytest.raises(TypeError):
        event_stream_consumer("A", on_created, exchange="x.topic.exchange")  # type: ignore[call-arg]


async def test_a_setup_error_at_start_leaves_the_connection_new() -> None:
    async def either(event: NeverRoutedA | NeverRoutedB) -> None:
        pass

    async with Connection("svc", "memory://start-again") as conn:
        with pytest.raises(ConfigurationError, match="no type of the union"):
            await conn.start(event_stream_consumer("A.One", either))
        assert conn.state == "new"
        await conn.start(
            event_stream_consumer("A.One", either), with_type_mapping(Route(NeverRoutedA, "A.One"))
        )
        assert conn.state == "started"


async def test_a_broker_error_at_start_still_closes() -> None:
    conn = Connection("svc", NOWHERE, connect_timeout=1, reconnect_timeout=1)
    with pytest.raises(BrokerConnectionError):
        await conn.start(event_stream_consumer("Order.Created", on_created))
    assert conn.state == "closed"


async def test_a_publisher_of_a_started_connection_is_described_without_a_state() -> None:
    publisher = Publisher(Route(OrderCreated, "Order.Created"))
    async with Connection("orders", "memory://described") as first:
        await first.start(event_stream_publisher(publisher))
        second = Connection("other", "memory://described")
        with pytest.raises(ConfigurationError) as refused:
            await second.start(event_stream_publisher(publisher))
        assert "already attached to connection 'orders';" in str(refused.value)
        assert "starting" not in str(refused.value)
        assert second.state == "new"  # refused before touching the broker


async def test_publish_service_response_before_start() -> None:
    conn = Connection("billing", NOWHERE)
    with pytest.raises(PublishError, match="connection 'billing' is new, not started"):
        await conn.publish_service_response("shop", "Quote", OrderCreated(id="1"))


async def test_registering_on_the_connection_goes_through_one_path() -> None:
    conn = Connection("svc", NOWHERE)

    @conn.stream_consumer("orders", "Order.Created")
    async def on_order(event: OrderCreated) -> None:
        pass

    @conn.transient_event_stream_consumer("Order.Created", queue_suffix="live")
    async def on_live(event: OrderCreated) -> None:
        pass

    assert len(conn._router.setups) == 2
