"""Arguments as RabbitMQ 3.10 checks them: validation of new queues and bindings, equivalence
on redeclaration, and the wire type names and Erlang formatting of its refusal texts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from ..._errors import BrokerError
from ..._topology import QueueSpec
from ._refusals import VHOST

__all__ = [
    "QUEUE_EQUIVALENCE_ARGS",
    "amqp_type",
    "check_args",
    "check_field",
    "validate_queue_arguments",
    "validate_quorum_queue",
    "validate_x_match",
]

# Queue arguments RabbitMQ 3.10 compares on redeclaration; any other argument is ignored.
QUEUE_EQUIVALENCE_ARGS: Final = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
)
_OVERFLOW_MODES: Final = frozenset({"drop-head", "reject-publish", "reject-publish-dlx"})
_QUEUE_TYPES: Final = frozenset({"classic", "quorum", "stream"})
_X_MATCH_MODES: Final = frozenset({"all", "any", "all-with-x", "any-with-x"})
# Integer arguments and their smallest valid value.
_INTEGER_ARGS: Final = (
    ("x-message-ttl", 0),
    ("x-expires", 1),
    ("x-max-length", 0),
    ("x-max-length-bytes", 0),
    ("x-delivery-limit", 0),
)

# ---------------------------------------------------------------------------------------------
# Validation of what is new


def validate_queue_arguments(queue: str, arguments: Mapping[str, Any]) -> None:
    """Refuse a new queue's invalid arguments (406) as RabbitMQ 3.10 words it."""

    def invalid(key: str, problem: str) -> BrokerError:
        return BrokerError(
            406,
            f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{queue}' in vhost "
            f"'{VHOST}': {problem}",
        )

    for key, minimum in _INTEGER_ARGS:
        if key not in arguments:
            continue
        value = arguments[key]
        if type(value) is not int:
            raise invalid(key, f'"expected integer, got {amqp_type(value)}"')
        if value < minimum:
            raise invalid(key, f"{{value_{'zero' if value == 0 else 'negative'},{value}}}")
    dlx = arguments.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, str):
        # Checked by the channel, before the queue's own checks, in words of its own.
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - invalid type '{amqp_type(dlx)}' for arg "
            f"'x-dead-letter-exchange' in queue '{queue}' in vhost '{VHOST}'",
        )
    for key in ("x-dead-letter-routing-key", "x-overflow"):
        if key in arguments and not isinstance(arguments[key], str):
            raise invalid(key, f"{{unacceptable_type,{amqp_type(arguments[key])}}}")
    if "x-single-active-consumer" in arguments:
        value = arguments["x-single-active-consumer"]
        if not isinstance(value, bool):
            raise invalid("x-single-active-consumer", f"{{unacceptable_type,{amqp_type(value)}}}")
    queue_type = arguments.get("x-queue-type")
    if isinstance(queue_type, str) and queue_type not in _QUEUE_TYPES:
        raise invalid("x-queue-type", f"\"unsupported queue type '{queue_type}'\"")
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
    if "x-overflow" in arguments and arguments["x-overflow"] not in _OVERFLOW_MODES:
        raise invalid("x-overflow", "invalid_overflow")


def validate_quorum_queue(queue: str, spec: QueueSpec) -> None:
    """RabbitMQ 3.10's checks of a new quorum queue, in its order."""
    for key in ("x-max-priority", "x-queue-mode"):
        if key in spec.arguments:
            raise BrokerError(
                406,
                f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{queue}' in vhost "
                f"'{VHOST}' of queue type rabbit_quorum_queue",
            )
    for refused, name in (
        (spec.auto_delete, "auto-delete"),
        (spec.exclusive, "exclusive-owner"),
        (not spec.durable, "non-durable"),
    ):
        if refused:
            raise BrokerError(
                406,
                f"PRECONDITION_FAILED - invalid property '{name}' for queue '{queue}' in "
                f"vhost '{VHOST}'",
            )


def validate_x_match(arguments: Mapping[str, Any]) -> None:
    """Refuse a headers binding's ``x-match`` that is not a known mode (406)."""
    if "x-match" not in arguments:
        return
    mode = arguments["x-match"]
    if not isinstance(mode, str):
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - Invalid x-match field type {amqp_type(mode)} "
            f"(value {_erlang_term(mode)}); expected longstr",
        )
    if mode not in _X_MATCH_MODES:
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - Invalid x-match field value {_erlang_term(mode)}; "
            "expected all, any, all-with-x, or any-with-x",
        )


# ---------------------------------------------------------------------------------------------
# Equivalence on redeclaration


def check_field(what: str, field: str, received: Any, current: Any) -> None:
    """406 unless a declaration's ``field`` (durable, type, ...) equals the current one."""
    if received != current:
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - inequivalent arg '{field}' for {what} in vhost '{VHOST}': "
            f"received '{_erlang(received)}' but current is '{_erlang(current)}'",
        )


def check_args(
    what: str, keys: Iterable[str], received: Mapping[str, Any], current: Mapping[str, Any]
) -> None:
    """406 unless the arguments ``keys`` of a declaration equal the current ones."""
    for key in keys:
        new, old = received.get(key), current.get(key)
        if key == "x-queue-type" and (new or "classic") == (old or "classic") == "classic":
            continue  # a classic queue declared without a type is one typed "classic"
        if new is None and old is None:
            continue
        if new is not None and old is not None:
            if _type_class(new) == _type_class(old) and new == old:
                continue
            # Both present: RabbitMQ names the values only, not their types.
            raise BrokerError(
                406,
                f"PRECONDITION_FAILED - inequivalent arg '{key}' for {what} in vhost "
                f"'{VHOST}': received '{_erlang(new)}' but current is '{_erlang(old)}'",
            )
        raise BrokerError(
            406,
            f"PRECONDITION_FAILED - inequivalent arg '{key}' for {what} in vhost '{VHOST}': "
            f"received {_describe(new)} but current is {_describe(old)}",
        )


def _type_class(value: Any) -> str:
    # RabbitMQ compares arguments by type class: every integer width is one class.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return type(value).__name__


def _describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"the value '{_erlang(value)}' of type '{amqp_type(value)}'"


# ---------------------------------------------------------------------------------------------
# Wire types and Erlang's formatting

# Integer field types by range, smallest first, as pamqp (aio-pika's codec) encodes an int.
_INTEGER_TYPES: Final = (
    (-(2**7), 2**7 - 1, "byte"),
    (-(2**15), 2**15 - 1, "short"),
    (0, 2**16 - 1, "unsignedshort"),
    (-(2**31), 2**31 - 1, "signedint"),
    (0, 2**32 - 1, "unsignedint"),
)


def amqp_type(value: Any) -> str:
    """The AMQP field type RabbitMQ names for ``value`` as a client library sends it.

    RabbitMQ's messages name the wire type, and a Python int has none of its own: pamqp, the
    codec under aio-pika, encodes it in the smallest type that holds it (``100`` is a
    ``byte``, ``60000`` an ``unsignedshort``), and a float as a 32-bit ``float``.
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        for low, high, name in _INTEGER_TYPES:
            if low <= value <= high:
                return name
        return "long"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bytes | bytearray):
        return "binary"
    if value is None:
        return "void"
    return type(value).__name__


def _erlang(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _erlang_term(value: Any) -> str:
    """``value`` as Erlang's ``~p`` prints it: a string as a binary, ``<<"all">>``."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'<<"{escaped}">>'
    return _erlang(value)
