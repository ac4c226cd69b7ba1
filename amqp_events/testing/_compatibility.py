"""Whether two versions of an event model can read each other's messages, for users' CI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["assert_compatible"]

_NOISE = frozenset({"title", "description", "default", "examples"})


def assert_compatible(old: type[BaseModel], new: type[BaseModel]) -> None:
    """Raise ``AssertionError`` listing every change from ``old`` to ``new`` that breaks a
    consumer during a rolling deploy; return None when there is none.

    Both ways must hold while old and new services run side by side: ``new`` reads every
    message ``old`` wrote, and ``old`` reads every message ``new`` writes. So adding an optional
    field is fine; adding a required field, removing or making optional a required one,
    changing any field's type, or forbidding extra fields that ``old`` sends is not. Field
    names are compared as they are on the wire (aliases). Use it in a test::

        def test_order_created_v2_is_compatible() -> None:
            assert_compatible(OrderCreatedV1, OrderCreatedV2)

    When the change is intended, give the new ``Route`` a higher ``version`` and an upcaster
    (``with_upcaster``) instead.
    """
    old_fields, new_fields = _fields(old), _fields(new)
    problems: list[str] = []
    for name, (new_required, new_schema) in new_fields.items():
        known = old_fields.get(name)
        if known is None:
            if new_required:
                problems.append(
                    f"{name!r} is required in {new.__name__} but {old.__name__} has no such "
                    "field: the new model cannot read old messages (make it optional)"
                )
            continue
        old_required, old_schema = known
        if old_schema != new_schema:
            problems.append(
                f"{name!r} changed type: {_describe(old_schema)} in {old.__name__}, "
                f"{_describe(new_schema)} in {new.__name__}"
            )
        elif new_required and not old_required:
            problems.append(
                f"{name!r} is optional in {old.__name__} but required in {new.__name__}: old "
                "messages without it cannot be read"
            )
        elif old_required and not new_required:
            problems.append(
                f"{name!r} is required in {old.__name__} but optional in {new.__name__}: new "
                "messages without it break old consumers"
            )
    for name, (old_required, _) in old_fields.items():
        if name in new_fields:
            continue
        if old_required:
            problems.append(
                f"{name!r} is required in {old.__name__} and gone from {new.__name__}: old "
                "consumers cannot read new messages"
            )
        elif new.model_config.get("extra") == "forbid":
            problems.append(
                f"{name!r} is gone from {new.__name__}, which forbids extra fields: it cannot "
                "read old messages that carry it"
            )
    if problems:
        raise AssertionError(
            f"{new.__name__} is not compatible with {old.__name__}:\n- " + "\n- ".join(problems)
        )


def _fields(model: type[BaseModel]) -> dict[str, tuple[bool, Any]]:
    """Wire name -> (required, the field's JSON schema with references resolved)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    return {
        name: (name in required, _resolved(prop, definitions, ()))
        for name, prop in schema.get("properties", {}).items()
    }


def _resolved(node: Any, definitions: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_resolved(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[-1]
        if name in seen:  # a recursive model: compare by name from here on
            return {"recursive": name}
        return _resolved(definitions.get(name, {}), definitions, (*seen, name))
    return {k: _resolved(v, definitions, seen) for k, v in node.items() if k not in _NOISE}


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        if "type" in schema:
            return str(schema["type"])
        if "anyOf" in schema:
            return " | ".join(_describe(s) for s in schema["anyOf"])
    return repr(schema)
