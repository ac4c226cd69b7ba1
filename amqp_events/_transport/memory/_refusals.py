"""RabbitMQ's refusals, as ``BrokerError``: its reply codes and, word for word, its texts."""

from __future__ import annotations

from typing import Final

from ..._errors import BrokerError

__all__ = [
    "VHOST",
    "default_exchange_refused",
    "exclusive_use",
    "internal_exchange",
    "no_exchange",
    "no_queue",
    "reserved_name",
    "resource_locked",
    "unknown_delivery_tag",
]

VHOST: Final = "/"  # the memory broker's one vhost, named in RabbitMQ's texts


def no_queue(name: str) -> BrokerError:
    return BrokerError(404, f"NOT_FOUND - no queue '{name}' in vhost '{VHOST}'")


def no_exchange(name: str) -> BrokerError:
    return BrokerError(404, f"NOT_FOUND - no exchange '{name}' in vhost '{VHOST}'")


def default_exchange_refused() -> BrokerError:
    return BrokerError(403, "ACCESS_REFUSED - operation not permitted on the default exchange")


def reserved_name(kind: str, name: str) -> BrokerError:
    """An ``amq.`` name for a new queue or exchange (``kind``)."""
    return BrokerError(
        403, f"ACCESS_REFUSED - {kind} name '{name}' contains reserved prefix 'amq.*'"
    )


def internal_exchange(name: str) -> BrokerError:
    return BrokerError(
        403,
        f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '{VHOST}'",
    )


def exclusive_use(queue: str) -> BrokerError:
    return BrokerError(403, f"ACCESS_REFUSED - queue '{queue}' in vhost '{VHOST}' in exclusive use")


def resource_locked(queue: str) -> BrokerError:
    return BrokerError(
        405,
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in vhost "
        f"'{VHOST}'. It could be originally declared on another connection or the exclusive "
        "property value does not match that of the original declaration.",
    )


def unknown_delivery_tag(tag: int) -> BrokerError:
    return BrokerError(406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")
