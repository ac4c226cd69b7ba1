"""``amqp-events asyncapi``: documents valid against the official AsyncAPI 3.0.0 schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from amqp_events._cli._asyncapi import _asyncapi_schema

from .apps.models import ChargeRequest, OrderCreated
from .conftest import Result

SCHEMA_FILE = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0-without-id.json"
SCHEMA_SHA256 = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f"
SHOP = "tests.cli.apps.shop"
ALL = [f"{SHOP}:orders", f"{SHOP}:shipping", f"{SHOP}:make_stat", f"{SHOP}:make_billing"]
Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _no_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    data = SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, "the vendored schema changed"
    return jsonschema.Draft7Validator(json.loads(data))


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def generate(cli: Cli, *apps: str) -> dict[str, Any]:
    result = cli("asyncapi", *apps)
    assert (result.code, result.err) == (0, "")
    document: dict[str, Any] = json.loads(result.out)
    return document


@pytest.mark.parametrize("apps", [ALL, ALL[:1], ALL[1:2], ALL[2:3], ALL[3:]])
def test_documents_are_valid_asyncapi_3(
    apps: list[str], cli: Cli, validator: jsonschema.Draft7Validator
) -> None:
    document = generate(cli, *apps)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    for ref in refs(document):
        resolve(document, ref)  # every reference points into the document


def test_the_validator_rejects_a_broken_binding(
    cli: Cli, validator: jsonschema.Draft7Validator
) -> None:
    document = generate(cli, f"{SHOP}:orders")
    channel = next(iter(document["channels"].values()))
    channel["bindings"]["amqp"]["queue"] = {"name": "both queue and exchange"}
    assert not validator.is_valid(document)


def test_channels_operations_and_bindings_say_what_goes_where(cli: Cli) -> None:
    document = generate(cli, *ALL)
    assert document["asyncapi"] == "3.0.0"
    created = document["channels"]["events.topic.exchange.Order.Created"]
    assert created["address"] == "Order.Created"
    assert created["bindings"]["amqp"] == {
        "is": "routingKey",
        "exchange": {
            "name": "events.topic.exchange",
            "type": "topic",
            "durable": True,
            "autoDelete": False,
        },
        "bindingVersion": "0.3.0",
    }
    send = document["operations"]["order-service.send.Order.Created"]
    assert send["action"] == "send"
    assert send["channel"] == {"$ref": "#/channels/events.topic.exchange.Order.Created"}
    assert send["bindings"]["amqp"]["deliveryMode"] == 2
    queue = "events.topic.exchange.queue.shipping-service"
    shipping = document["channels"][f"queue.{queue}"]
    assert shipping["bindings"]["amqp"]["is"] == "queue"
    assert shipping["bindings"]["amqp"]["queue"]["name"] == queue
    assert set(shipping["messages"]) == {"OrderCreated", "OrderUpdated"}
    receive = document["operations"]["shipping-service.receive.Order.star"]
    assert receive["action"] == "receive"
    assert receive["x-amqp-events-bindings"] == [
        {"exchange": "events.topic.exchange", "routingKey": "Order.*", "arguments": {}}
    ]
    assert len(receive["messages"]) == 2


def test_payloads_are_the_pydantic_schemas(cli: Cli) -> None:
    document = generate(cli, *ALL)
    schemas = document["components"]["schemas"]
    expected = _asyncapi_schema(
        OrderCreated.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    )
    nested = expected.pop("$defs")
    assert schemas["OrderCreated"] == expected
    assert {"Line", "Card", "Invoice", "Currency"} <= set(nested) <= set(schemas)
    assert "Id" in schemas["OrderCreated"]["required"]  # the alias, as on the wire
    assert schemas["ChargeRequest"] == ChargeRequest.model_json_schema()
    message = document["components"]["messages"]["OrderCreated"]
    assert message["payload"] == {"$ref": "#/components/schemas/OrderCreated"}
    assert message["contentType"] == "application/json"
    assert message["summary"] == "An order was placed."


def test_yaml_and_output_file(cli: Cli, tmp_path: Path) -> None:
    as_json = generate(cli, *ALL)
    target = tmp_path / "asyncapi.yaml"
    result = cli("asyncapi", *ALL, "--yaml", "--output", str(target))
    assert (result.code, result.out) == (0, "")
    assert yaml.safe_load(target.read_text()) == as_json


def test_the_server_comes_from_the_broker_url(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://user:secret@rabbit.example:5673/shop")
    document = generate(cli, f"{SHOP}:orders")
    assert document["servers"] == {
        "broker": {"host": "rabbit.example:5673", "protocol": "amqp", "pathname": "/shop"}
    }
    assert "secret" not in json.dumps(document)
