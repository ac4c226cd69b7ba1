"""``amqp-events asyncapi``: an AsyncAPI 3.0.0 document of one or more services.

- Each published route is a channel whose address is the routing key, with the AMQP binding
  ``is: routingKey`` naming the exchange; the publishing service has a ``send`` operation on it.
- Each consumed queue is a channel whose address is the queue name, with the AMQP binding
  ``is: queue``; each handler on it is a ``receive`` operation, whose ``x-amqp-events-bindings``
  extension lists the exchange and routing key that bring its messages into the queue.
- Messages are the event types; their payload schemas are pydantic's ``model_json_schema()``
  (JSON Schema), with the models they nest hoisted into ``components.schemas``.

Bindings follow the AsyncAPI AMQP bindings 0.3.0.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel

from .. import _naming as naming
from ._service import Consumed, Published, ServiceModel, type_name

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document"]

ASYNCAPI_VERSION: Final = "3.0.0"
AMQP_BINDING_VERSION: Final = "0.3.0"
_REF_TEMPLATE: Final = "#/components/schemas/{model}"
_ID_UNSAFE = re.compile(r"[^\w.\-]")


def _component_id(text: str) -> str:
    """A key that AsyncAPI accepts for components, channels and operations."""
    cleaned = _ID_UNSAFE.sub("_", text.replace("*", "star").replace("#", "hash"))
    return cleaned or "_"


class _Document:
    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {}

    def message(self, event_type: Any) -> str:
        """The component message of ``event_type`` (made once); its id."""
        name = _component_id(type_name(event_type))
        if name == "dict":
            name = "JsonObject"
        if name in self.messages:
            return name
        if isinstance(event_type, type) and issubclass(event_type, BaseModel):
            schema = _asyncapi_schema(
                event_type.model_json_schema(by_alias=True, ref_template=_REF_TEMPLATE)
            )
            for nested, definition in schema.pop("$defs", {}).items():
                self.schemas.setdefault(_component_id(nested), definition)
            self.schemas[name] = schema
        else:
            self.schemas[name] = {"type": "object", "description": "Any JSON object"}
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "contentType": naming.CONTENT_TYPE_JSON,
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {"amqp": {"bindingVersion": AMQP_BINDING_VERSION}},
        }
        doc = getattr(event_type, "__doc__", None)
        if doc and isinstance(event_type, type) and event_type.__doc__ != BaseModel.__doc__:
            message["summary"] = " ".join(doc.split())[:200]
        self.messages[name] = message
        return name

    def unique(self, table: dict[str, Any], wanted: str) -> str:
        key, n = wanted, 2
        while key in table:
            key, n = f"{wanted}_{n}", n + 1
        return key


def asyncapi_document(
    models: list[ServiceModel],
    *,
    title: str | None = None,
    version: str = "1.0.0",
    url: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``models``, as plain JSON data."""
    doc = _Document()
    publish_channels: dict[tuple[str, str], str] = {}
    exchange_specs = {e.name: e for m in models for e in m.topology.exchanges}
    for model in models:
        for published in model.published:
            _add_send(doc, model, published, publish_channels, exchange_specs)
        for consumed in model.consumed:
            _add_receive(doc, model, consumed)
    names = ", ".join(m.name for m in models)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title or names,
            "version": version,
            "description": f"Events of {names}, as amqp-events declares them "
            "(wire-compatible with goamqp).",
        },
        "defaultContentType": naming.CONTENT_TYPE_JSON,
    }
    server = _server(url)
    if server is not None:
        document["servers"] = {"broker": server}
    document["channels"] = doc.channels
    document["operations"] = doc.operations
    document["components"] = {"messages": doc.messages, "schemas": doc.schemas}
    return document


def _server(url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    parts = urlsplit(url.split(",")[0])
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    server: dict[str, Any] = {"host": host, "protocol": parts.scheme}
    if parts.path not in ("", "/"):
        server["pathname"] = parts.path
    return server


def _add_send(
    doc: _Document,
    model: ServiceModel,
    published: Published,
    channels: dict[tuple[str, str], str],
    exchanges: dict[str, Any],
) -> None:
    message = doc.message(published.event_type)
    key = (published.exchange, published.routing_key)
    channel_id = channels.get(key)
    if channel_id is None:
        channel_id = doc.unique(
            doc.channels,
            _component_id(f"{published.exchange or 'default'}.{published.routing_key}"),
        )
        channels[key] = channel_id
        spec = exchanges.get(published.exchange)
        exchange: dict[str, Any] = (
            {
                "name": spec.name,
                "type": spec.type,
                "durable": spec.durable,
                "autoDelete": spec.auto_delete,
            }
            if spec is not None
            else {"name": published.exchange, "type": "default"}
        )
        doc.channels[channel_id] = {
            "address": published.routing_key,
            "title": f"{published.routing_key} on {published.exchange or 'the default exchange'}",
            "messages": {},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": exchange,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
    doc.channels[channel_id]["messages"].setdefault(
        message, {"$ref": f"#/components/messages/{message}"}
    )
    operation_id = doc.unique(
        doc.operations, _component_id(f"{model.name}.send.{published.routing_key}")
    )
    operation_bindings: dict[str, Any] = {
        "deliveryMode": naming.DELIVERY_MODE_PERSISTENT,
        "mandatory": published.mandatory,
        "bindingVersion": AMQP_BINDING_VERSION,
    }
    if published.cc:
        operation_bindings["cc"] = list(published.cc)
    doc.operations[operation_id] = {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "summary": f"{model.name} publishes {type_name(published.event_type)} "
        f"({published.destination})",
        "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message}"}],
        "bindings": {"amqp": operation_bindings},
    }


def _add_receive(doc: _Document, model: ServiceModel, consumed: Consumed) -> None:
    queue = next((q for q in model.topology.queues if q.name == consumed.queue), None)
    channel_id = _component_id(f"queue.{consumed.queue}")
    channel = doc.channels.get(channel_id)
    if channel is None:
        queue_binding: dict[str, Any] = {"name": consumed.queue}
        if queue is not None:
            queue_binding.update(
                durable=queue.durable, exclusive=queue.exclusive, autoDelete=queue.auto_delete
            )
        channel = doc.channels[channel_id] = {
            "address": consumed.queue,
            "title": f"queue {consumed.queue} of {model.name}",
            "messages": {},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": queue_binding,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
    message_ids = [doc.message(t) for _, t in consumed.types]
    for message in message_ids:
        channel["messages"].setdefault(message, {"$ref": f"#/components/messages/{message}"})
    operation_id = doc.unique(
        doc.operations, _component_id(f"{model.name}.receive.{consumed.routing_key}")
    )
    operation: dict[str, Any] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "summary": f"{model.name} handles {consumed.routing_key} with {consumed.handler}",
        "messages": [
            {"$ref": f"#/channels/{channel_id}/messages/{message}"}
            for message in dict.fromkeys(message_ids)
        ],
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        "x-amqp-events-bindings": [
            {"exchange": b.exchange, "routingKey": b.routing_key, "arguments": dict(b.arguments)}
            for b in consumed.exchanges
        ],
    }
    doc.operations[operation_id] = operation


def _asyncapi_schema(schema: Any) -> Any:
    """pydantic's JSON Schema, with the few keywords AsyncAPI's schema object reads otherwise:
    ``discriminator`` is the property's name there (OpenAPI's object in pydantic's output), and
    ``$ref`` names are made component keys."""
    if isinstance(schema, dict):
        converted = {k: _asyncapi_schema(v) for k, v in schema.items()}
        discriminator = converted.get("discriminator")
        if isinstance(discriminator, dict):
            converted["discriminator"] = discriminator.get("propertyName", "")
        ref = converted.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.removeprefix("#/components/schemas/")
            converted["$ref"] = f"#/components/schemas/{_component_id(name)}"
        return converted
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema
