"""``amqp-events topology``: what services declare, without a broker; a bad APP in one line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from .conftest import Result

SHOP = "tests.cli.apps.shop"
ALL = [f"{SHOP}:orders", f"{SHOP}:shipping", f"{SHOP}:make_stat", f"{SHOP}:make_billing"]
Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _no_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)


def test_text_lists_every_declaration_and_handler(cli: Cli) -> None:
    result = cli("topology", f"{SHOP}:shipping")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0] == "service shipping-service"
    queue = "events.topic.exchange.queue.shipping-service"
    assert any(line.split()[:2] == ["events.topic.exchange", "topic"] for line in lines)
    assert any(line.split() == [queue, "yes", "no", "no", "x-expires=432000000"] for line in lines)
    assert any(line.split()[:2] == [f"{queue}.dlq", "yes"] for line in lines)
    assert any(line.split() == [queue, "events.topic.exchange", "Order.*", "-"] for line in lines)
    assert any(
        line.split()
        == [queue, "Order.*", "OrderCreated", "|", "OrderUpdated", "handle_order_event"]
        for line in lines
    )


def test_json_is_the_plan_the_connection_declares(cli: Cli) -> None:
    result = cli("topology", *ALL, "--format", "json")
    assert result.code == 0
    services = {s["service"]: s for s in json.loads(result.out)["services"]}
    assert list(services) == [
        "order-service",
        "shipping-service",
        "stat-service",
        "billing-service",
    ]
    orders = services["order-service"]
    assert [(p["exchange"], p["routing_key"], p["event_type"]) for p in orders["publishers"]] == [
        ("events.topic.exchange", "Order.Created", "OrderCreated"),
        ("events.topic.exchange", "Order.Updated", "OrderUpdated"),
        ("billing-service.direct.exchange.request", "Charge", "ChargeRequest"),
    ]
    stat = services["stat-service"]
    assert stat["bindings"] == [
        {
            "queue": "events.topic.exchange.queue.stat-service",
            "exchange": "events.topic.exchange",
            "routing_key": "Order.Created",
            "arguments": {},
        }
    ]
    assert {q["name"]: q["arguments"] for q in stat["queues"]} == {
        "events.topic.exchange.queue.stat-service": {"x-expires": 432000000},
        "events.topic.exchange.queue.stat-service.dlq": {},
        "events.topic.exchange.queue.stat-service.retry.1000": {
            "x-message-ttl": 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "events.topic.exchange.queue.stat-service",
        },
        "events.topic.exchange.queue.stat-service.retry.10000": {
            "x-message-ttl": 10000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "events.topic.exchange.queue.stat-service",
        },
    }
    [union] = services["shipping-service"]["consumers"]
    assert union["event_types"] == {
        "Order.Created": "OrderCreated",
        "Order.Updated": "OrderUpdated",
    }
    billing = services["billing-service"]["consumers"]
    assert [(c["routing_key"], c["event_types"], c["request_handler"]) for c in billing] == [
        ("Charge", {"Charge": "ChargeRequest"}, True),
        ("Refund", {"Refund": "dict"}, True),
    ]


def test_mermaid_draws_the_whole_system_sharing_exchanges(cli: Cli) -> None:
    result = cli("topology", *ALL, "--format", "mermaid")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = {line.split("(")[0].split("{")[0].split("[")[0].strip(): line for line in lines[1:]}
    by_label = {line.split('"')[1]: node for node, line in nodes.items() if "-->" not in line}
    exchange = by_label["events.topic.exchange"]
    assert sum(1 for line in lines if line.strip().startswith(f"{exchange}{{{{")) == 1  # shared
    orders, stat = by_label["order-service"], by_label["stat-service"]
    stat_queue = by_label["events.topic.exchange.queue.stat-service"]
    edges = [line.strip() for line in lines if "-->" in line]
    assert f'{orders} -->|"Order.Created<br/>Order.Updated"| {exchange}' in edges
    assert f'{exchange} -->|"Order.Created"| {stat_queue}' in edges
    assert f"{stat_queue} --> {stat}" in edges
    billing = by_label["billing-service"]
    responses = by_label["billing-service.headers.exchange.response"]
    assert f'{billing} -->|"Charge (response)<br/>Refund (response)"| {responses}' in edges


@pytest.mark.parametrize(
    ("app", "named"),
    [
        ("tests.cli.apps.shop", "must be 'module:attribute'"),
        ("tests.cli.apps.nope:app", "no module named 'tests.cli.apps.nope'"),
        (f"{SHOP}:missing", "has no attribute 'missing'"),
        (f"{SHOP}:NOT_A_CONNECTION", "is a int, not a Connection"),
        (f"{SHOP}:make_nothing", "the factory returned a int, not a Connection"),
        ("tests.cli.apps.broken:app", "raised RuntimeError: database settings missing"),
    ],
)
def test_a_bad_app_is_one_line_and_exit_2(app: str, named: str, cli: Cli) -> None:
    result = cli("topology", app)
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert named in result.err
    assert "Traceback" not in result.err


def test_a_setup_error_names_the_service(cli: Cli, tmp_path: pytest.TempPathFactory) -> None:
    result = cli("topology", "tests.cli.apps.bad_setup:conn")
    assert result.code == 2
    assert "service 'bad-setup'" in result.err
    assert "has no event type" in result.err
    assert result.err.count("\n") == 1
