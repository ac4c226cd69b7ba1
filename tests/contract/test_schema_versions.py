"""Schema versions on both brokers: the version travels with the event, older ones are upcast
in order, newer ones are dead-lettered with a reason of their own."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from amqp_events import (
    ConfigurationError,
    Connection,
    Metadata,
    Publisher,
    Route,
    event_stream_consumer,
    event_stream_publisher,
    with_type_mapping,
    with_upcaster,
)
from amqp_events.testing import assert_compatible
from tests.helpers import Collector, drain


class OrderV1(BaseModel):
    id: str
    amount: int  # cents


class OrderV2(BaseModel):
    id: str
    amount_cents: int


class OrderV3(BaseModel):
    id: str
    amount_cents: int
    currency: str


class OrderV2Compatible(BaseModel):
    id: str
    amount: int
    note: str | None = None


def rename_amount(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": data["id"], "amount_cents": data["amount"]}


def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


async def publish_versions(url: str, *events: tuple[BaseModel, int]) -> None:
    """Publish each event as a service that knows that version of ``Order.Created``."""
    for number, (event, version) in enumerate(events):
        publisher = Publisher(Route(type(event), "Order.Created", version=version))
        async with Connection(f"orders-v{version}-{number}", url) as conn:
            await conn.start(event_stream_publisher(publisher))
            await publisher.publish(event)


async def test_older_versions_are_upcast_in_order(amqp_events_broker_url: str) -> None:
    got: Collector[tuple[OrderV3, int]] = Collector()

    async def on_order(event: OrderV3, metadata: Metadata) -> None:
        got.add((event, metadata.version))

    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start(
            event_stream_consumer("Order.Created", on_order),
            with_type_mapping(Route(OrderV3, "Order.Created", version=3)),
            with_upcaster("Order.Created", 1, rename_amount),
            with_upcaster("Order.Created", 2, add_currency),
        )
        await publish_versions(
            amqp_events_broker_url,
            (OrderV1(id="a", amount=100), 1),
            (OrderV2(id="b", amount_cents=200), 2),
            (OrderV3(id="c", amount_cents=300, currency="SEK"), 3),
        )
        received = sorted(await got.wait(3), key=lambda item: item[0].id)
    assert received == [
        (OrderV3(id="a", amount_cents=100, currency="EUR"), 1),  # 1 -> 2 -> 3
        (OrderV3(id="b", amount_cents=200, currency="EUR"), 2),  # 2 -> 3
        (OrderV3(id="c", amount_cents=300, currency="SEK"), 3),  # as it is
    ]


async def test_a_version_step_without_an_upcaster_reads_the_event_as_it_is(
    amqp_events_broker_url: str,
) -> None:
    assert_compatible(OrderV1, OrderV2Compatible)
    got: Collector[OrderV2Compatible] = Collector()

    async def on_order(event: OrderV2Compatible) -> None:
        got.add(event)

    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start(
            event_stream_consumer("Order.Created", on_order),
            with_type_mapping(Route(OrderV2Compatible, "Order.Created", version=2)),
        )
        await publish_versions(amqp_events_broker_url, (OrderV1(id="a", amount=1), 1))
        assert await got.wait(1) == [OrderV2Compatible(id="a", amount=1)]


async def test_newer_versions_and_failing_upcasters_go_to_the_dlq(
    amqp_events_broker_url: str,
) -> None:
    handled: Collector[OrderV2] = Collector()

    async def on_order(event: OrderV2) -> None:
        handled.add(event)

    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("amount")

    async with Connection("billing", amqp_events_broker_url) as billing:
        await billing.start(
            event_stream_consumer("Order.Created", on_order),
            with_type_mapping(Route(OrderV2, "Order.Created", version=2)),
            with_upcaster("Order.Created", 1, broken),
        )
        await publish_versions(
            amqp_events_broker_url,
            (OrderV3(id="new", amount_cents=1, currency="EUR"), 3),
            (OrderV1(id="old", amount=1), 1),
            (OrderV2(id="same", amount_cents=2), 2),
        )
        assert await handled.wait(1) == [OrderV2(id="same", amount_cents=2)]
        await billing.close()
    dead = await drain(amqp_events_broker_url, "events.topic.exchange.queue.billing.dlq")
    reasons = {body: headers["amqp-events-dead-reason"] for body, headers in dead}
    assert reasons == {
        b'{"id":"new","amount_cents":1,"currency":"EUR"}': "version-too-new",
        b'{"id":"old","amount":1}': "undecodable",
    }
    causes = sorted(headers["amqp-events-exception-message"] for _, headers in dead)
    assert "upcaster of 'Order.Created' from version 1 to 2 failed: KeyError" in causes[1]
    assert "schema version 3 is newer than version 2" in causes[0]
    # Version 1 is sent as no version at all, as goamqp services send it.
    assert {headers.get("cloudEvents:schemaversion") for _, headers in dead} == {3, None}


@pytest.mark.parametrize(
    ("setups", "message"),
    [
        (
            [with_upcaster("Order.Created", 1, rename_amount)],
            "expects version 1 of 'Order.Created'",
        ),
        (
            [
                with_type_mapping(Route(OrderV3, "Order.Created", version=3)),
                with_upcaster("Order.Created", 1, rename_amount),
                with_upcaster("Order.Created", 1, add_currency),
            ],
            "with_upcaster\\('Order.Created', 1\\) is set up twice",
        ),
    ],
)
async def test_upcasters_that_could_never_run_are_refused(setups: list[Any], message: str) -> None:
    conn = Connection("billing", "amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(ConfigurationError, match=message):
        await conn.start(*setups)


def test_upcaster_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="is a pattern"):
        with_upcaster("Order.*", 1, rename_amount)
    with pytest.raises(ConfigurationError, match="an int from 1, got 0"):
        with_upcaster("Order.Created", 0, rename_amount)
    with pytest.raises(ConfigurationError, match="version must be an int from 1"):
        Route(OrderV1, "Order.Created", version=0)
