"""``amqp-events topology``: what services declare, as text tables, a mermaid flowchart or JSON.

The mermaid chart is drawn as goamqp's README draws its example: publishing services point at
the exchanges they publish to, exchanges at the queues bound to them (labelled with the binding
keys), queues at the services consuming them. Several services draw the whole system, sharing
the exchanges they have in common. Delay and dead-letter queues are in the text and JSON only.
"""

from __future__ import annotations

import re
from typing import Any

from .. import _naming as naming
from .._topology import Topology
from ._service import ServiceModel, type_name
from ._tables import format_arguments, table

__all__ = ["as_json", "as_mermaid", "as_text"]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def as_text(models: list[ServiceModel]) -> str:
    return "\n\n".join(_service_text(m) for m in models) + "\n"


def _service_text(model: ServiceModel) -> str:
    topology = model.topology
    parts = [f"service {model.name}"]
    if topology.exchanges:
        parts.append(
            table(
                ["EXCHANGE", "TYPE", "DURABLE", "AUTO-DELETE", "ARGUMENTS"],
                [
                    [
                        e.name,
                        e.type,
                        _yes(e.durable),
                        _yes(e.auto_delete),
                        format_arguments(e.arguments),
                    ]
                    for e in topology.exchanges
                ],
            )
        )
    if topology.queues:
        parts.append(
            table(
                ["QUEUE", "DURABLE", "EXCLUSIVE", "AUTO-DELETE", "ARGUMENTS"],
                [
                    [
                        q.name,
                        _yes(q.durable),
                        _yes(q.exclusive),
                        _yes(q.auto_delete),
                        format_arguments(q.arguments),
                    ]
                    for q in topology.queues
                ],
            )
        )
    if topology.bindings:
        parts.append(
            table(
                ["BOUND QUEUE", "EXCHANGE", "ROUTING KEY", "ARGUMENTS"],
                [
                    [b.queue, b.exchange, b.routing_key, format_arguments(b.arguments)]
                    for b in topology.bindings
                ],
            )
        )
    if model.consumed:
        parts.append(
            table(
                ["CONSUMED QUEUE", "ROUTING KEY", "EVENT TYPE", "HANDLER"],
                [
                    [
                        c.queue,
                        c.routing_key,
                        " | ".join(type_name(t) for _, t in c.types),
                        c.handler,
                    ]
                    for c in model.consumed
                ],
            )
        )
    if model.published:
        parts.append(
            table(
                ["PUBLISHED TO", "ROUTING KEY", "EVENT TYPE"],
                [
                    [
                        p.exchange or f"(default) cc {', '.join(p.cc)}",
                        p.routing_key,
                        type_name(p.event_type),
                    ]
                    for p in model.published
                ],
            )
        )
    if len(parts) == 1:
        parts.append("(declares nothing)")
    return "\n\n".join(parts)


def as_json(models: list[ServiceModel]) -> dict[str, Any]:
    return {"services": [_service_json(m) for m in models]}


def _topology_json(topology: Topology) -> dict[str, Any]:
    return {
        "exchanges": [
            {
                "name": e.name,
                "type": e.type,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": dict(e.arguments),
            }
            for e in topology.exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "durable": q.durable,
                "exclusive": q.exclusive,
                "auto_delete": q.auto_delete,
                "arguments": dict(q.arguments),
            }
            for q in topology.queues
        ],
        "bindings": [
            {
                "queue": b.queue,
                "exchange": b.exchange,
                "routing_key": b.routing_key,
                "arguments": dict(b.arguments),
            }
            for b in topology.bindings
        ],
    }


def _service_json(model: ServiceModel) -> dict[str, Any]:
    return {
        "service": model.name,
        **_topology_json(model.topology),
        "consumers": [
            {
                "queue": c.queue,
                "routing_key": c.routing_key,
                "handler": c.handler,
                "event_types": {key: type_name(t) for key, t in c.types},
                "request_handler": c.request,
            }
            for c in model.consumed
        ],
        "publishers": [
            {
                "exchange": p.exchange,
                "routing_key": p.routing_key,
                "event_type": type_name(p.event_type),
                "cc": list(p.cc),
            }
            for p in model.published
        ],
    }


class _Ids:
    """Mermaid node ids (``s1``, ``x1``, ``q1``) for names that may hold any character."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], str] = {}
        self.lines: list[str] = []

    def node(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self.ids:
            node_id = f"{kind}{len([k for k in self.ids if k[0] == kind]) + 1}"
            self.ids[key] = node_id
            label = _label(name or "(default exchange)")
            shape = {"s": '("{}")', "x": '{{{{"{}"}}}}', "q": '[("{}")]'}[kind].format(label)
            self.lines.append(f"    {node_id}{shape}")
        return self.ids[key]


def _label(text: str) -> str:
    return re.sub(r'["<>]', lambda m: f"#{ord(m.group())};", text)


def as_mermaid(models: list[ServiceModel]) -> str:
    ids = _Ids()
    edges: dict[tuple[str, str], list[str]] = {}

    def edge(source: str, target: str, label: str) -> None:
        labels = edges.setdefault((source, target), [])
        if label and label not in labels:
            labels.append(label)

    for model in models:
        service = ids.node("s", model.name)
        for p in model.published:
            if p.exchange:
                edge(service, ids.node("x", p.exchange), p.routing_key)
            else:
                for queue in p.cc:
                    edge(service, ids.node("q", queue), p.routing_key)
        consumed_queues = {c.queue for c in model.consumed}
        for binding in model.topology.bindings:
            exchange = ids.node("x", binding.exchange)
            queue = ids.node("q", binding.queue)
            label = binding.routing_key
            if binding.arguments:
                label += " " + format_arguments(binding.arguments)
            edge(exchange, queue, label)
        for queue_name in sorted(consumed_queues):
            edge(ids.node("q", queue_name), service, "")
        for consumed in model.consumed:
            if consumed.request:  # its return value goes to the caller, by the response exchange
                responses = ids.node("x", naming.response_exchange(model.name))
                edge(service, responses, f"{consumed.routing_key} (response)")
    lines = ["flowchart LR", *ids.lines]
    for (source, target), labels in edges.items():
        label = "<br/>".join(_label(text) for text in labels)
        lines.append(
            f'    {source} -->|"{label}"| {target}' if label else f"    {source} --> {target}"
        )
    return "\n".join(lines) + "\n"
