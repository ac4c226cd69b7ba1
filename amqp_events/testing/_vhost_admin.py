"""What managing a test broker's vhosts means, whichever tool does it.

:class:`VhostAdmin` creates, deletes and inspects vhosts; ``_management_api`` and
``_rabbitmqctl`` implement it, and ``_broker.choose_vhost_admin`` picks the one that works.
:class:`VhostView` is an admin bound to one vhost: what the ``amqp_events_rabbitmq_admin``
fixture gives.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from .._errors import AmqpEventsError
from .._transport.memory._info import BindingInfo, ExchangeInfo, QueueInfo
from ._urls import new_vhost_name

__all__ = [
    "ADMIN_TIMEOUT",
    "EXCHANGE_COLUMNS",
    "FULL_PERMISSIONS",
    "PROBE_TIMEOUT",
    "QUEUE_COLUMNS",
    "VhostAdmin",
    "VhostAdminError",
    "VhostView",
    "exchange_info",
    "queue_bindings",
    "queue_info",
]

FULL_PERMISSIONS: Final = {"configure": ".*", "write": ".*", "read": ".*"}
# Long enough for a loaded CI broker, short enough that a hung call does not stall a session.
ADMIN_TIMEOUT: Final = 60.0
PROBE_TIMEOUT: Final = 3.0


class VhostAdminError(AmqpEventsError):
    """A vhost could not be created, deleted or inspected, or no way to do so was found."""


QUEUE_COLUMNS: Final = (
    "name",
    "durable",
    "auto_delete",
    "exclusive",
    "arguments",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
)
"""What a :class:`QueueInfo` is made of: ``rabbitmqctl list_queues`` columns, and the keys of the
management API's queue objects, which have the same names."""

EXCHANGE_COLUMNS: Final = ("name", "type", "durable", "auto_delete", "internal", "arguments")
"""The same for an :class:`ExchangeInfo` (``list_exchanges``, the API's exchange objects)."""


def queue_info(row: Mapping[str, Any], arguments: Mapping[str, Any]) -> QueueInfo:
    """A queue row of ``rabbitmqctl`` or of the management API (:data:`QUEUE_COLUMNS`), its
    ``arguments`` already converted. A counter the row lacks (the management API has not sampled
    the queue yet) reads 0."""
    return QueueInfo(
        name=str(row["name"]),
        durable=bool(row.get("durable")),
        exclusive=bool(row.get("exclusive")),
        auto_delete=bool(row.get("auto_delete")),
        arguments=arguments,
        messages_ready=int(row.get("messages_ready") or 0),
        messages_unacknowledged=int(row.get("messages_unacknowledged") or 0),
        consumers=int(row.get("consumers") or 0),
    )


def exchange_info(row: Mapping[str, Any], arguments: Mapping[str, Any]) -> ExchangeInfo:
    """An exchange row of ``rabbitmqctl`` or of the management API (:data:`EXCHANGE_COLUMNS`)."""
    return ExchangeInfo(
        name=str(row["name"]),
        type=str(row["type"]),
        durable=bool(row.get("durable")),
        auto_delete=bool(row.get("auto_delete")),
        internal=bool(row.get("internal")),
        arguments=arguments,
    )


def queue_bindings(
    rows: Iterable[tuple[str, str, str, str, Mapping[str, Any]]],
) -> list[BindingInfo]:
    """RabbitMQ's bindings, as ``(source, destination, destination type, routing key, arguments)``,
    reduced to what :class:`BindingInfo` lists (explicit bindings of queues), in a stable order."""
    bindings = [
        BindingInfo(queue=destination, exchange=source, routing_key=key, arguments=arguments)
        for source, destination, destination_type, key, arguments in rows
        if source != "" and destination_type == "queue"
    ]
    return sorted(bindings, key=_binding_order)


def _binding_order(b: BindingInfo) -> tuple[str, str, str, str]:
    # Keys are unique: sorting the items never compares two values.
    return (b.exchange, b.queue, b.routing_key, repr(sorted(b.arguments.items())))


class VhostAdmin(abc.ABC):
    """Creates, deletes and inspects vhosts, granting :attr:`user` full permissions on them.

    :attr:`user` is the user of the AMQP URL, the one the tests connect as.
    """

    def __init__(self, user: str) -> None:
        self.user = user

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. ``management API at http://127.0.0.1:15672/api``."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Raise :class:`VhostAdminError` saying why this admin cannot be used."""

    @abc.abstractmethod
    def create_vhost(self, vhost: str) -> None:
        """Create ``vhost`` with configure/write/read ``.*`` for :attr:`user`."""

    def create_fresh_vhost(self) -> str:
        """A vhost of a fresh name (``new_vhost_name``), created now and never used before."""
        vhost = new_vhost_name()
        self.create_vhost(vhost)
        return vhost

    def unused_vhosts(self) -> list[str]:
        """Vhosts made ahead of time and never handed out (deleted by ``BrokerHandle.close``)."""
        return []

    @abc.abstractmethod
    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` and everything in it; a vhost that does not exist is no error."""

    def delete_vhosts(self, vhosts: Sequence[str]) -> None:
        """Delete each of ``vhosts`` (at once where the admin can: one command, not one
        each); one that does not exist is no error."""
        for vhost in vhosts:
            self.delete_vhost(vhost)

    @abc.abstractmethod
    def list_vhosts(self) -> list[str]:
        """Names of all vhosts on the broker."""

    @abc.abstractmethod
    def queues(self, vhost: str) -> list[QueueInfo]:
        """Queues of ``vhost`` sorted by name (an unknown vhost has none)."""

    @abc.abstractmethod
    def exchanges(self, vhost: str) -> list[ExchangeInfo]:
        """Exchanges of ``vhost`` sorted by name, ``""`` and the ``amq.*`` ones included."""

    @abc.abstractmethod
    def bindings(self, vhost: str) -> list[BindingInfo]:
        """Explicit queue bindings of ``vhost`` (see :class:`BindingInfo`), in a stable order."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class VhostView:
    """One test's vhost, inspected: what the ``amqp_events_rabbitmq_admin`` fixture gives.

    ``queue(name)``, ``exchange(name)`` and ``bindings()`` return the shapes the memory broker's
    ``queue_info(name)``, ``exchange_info(name)`` and ``bindings()`` return (:class:`QueueInfo`,
    :class:`ExchangeInfo`, :class:`BindingInfo`), filled alike whether the management API or
    ``rabbitmqctl`` answered, so that a test can compare what the two brokers hold. Lists come
    sorted (queues and exchanges by name, bindings by exchange, queue and routing key). The calls
    block (``rabbitmqctl`` takes about half a second): from async code, call them with
    ``asyncio.to_thread`` if a connection must stay alive meanwhile.
    """

    def __init__(self, admin: VhostAdmin, vhost: str, url: str) -> None:
        self.admin = admin
        self.vhost = vhost
        self.url = url

    def queues(self) -> list[QueueInfo]:
        """Queues of this vhost sorted by name."""
        return self.admin.queues(self.vhost)

    def queue(self, name: str) -> QueueInfo:
        """The queue called ``name``; :class:`LookupError` naming the queues there if none."""
        return _named(self.queues(), name, "queue", self.vhost)

    def exchanges(self) -> list[ExchangeInfo]:
        """Exchanges of this vhost sorted by name, ``""`` and the ``amq.*`` ones included."""
        return self.admin.exchanges(self.vhost)

    def exchange(self, name: str) -> ExchangeInfo:
        """The exchange called ``name``; :class:`LookupError` naming the exchanges there if
        none."""
        return _named(self.exchanges(), name, "exchange", self.vhost)

    def bindings(self, queue: str | None = None) -> list[BindingInfo]:
        """Explicit bindings of this vhost's queues, or of ``queue`` only (as
        ``MemoryBroker.bindings``): not the default exchange's implicit ones."""
        bindings = self.admin.bindings(self.vhost)
        return [b for b in bindings if queue is None or b.queue == queue]

    def __repr__(self) -> str:
        return f"<VhostView {self.vhost!r} via {self.admin.describe()}>"


_Named = TypeVar("_Named", QueueInfo, ExchangeInfo)


def _named(infos: list[_Named], name: str, kind: str, vhost: str) -> _Named:
    for info in infos:
        if info.name == name:
            return info
    names = ", ".join(repr(info.name) for info in infos) or "none"
    raise LookupError(f"no {kind} {name!r} in vhost {vhost!r} ({kind}s: {names})")
