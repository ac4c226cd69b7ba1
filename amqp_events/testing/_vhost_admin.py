"""What managing a test broker's vhosts means, whichever tool does it.

:class:`VhostAdmin` creates, deletes and inspects vhosts; ``_management_api`` and
``_rabbitmqctl`` implement it, and ``_broker.choose_vhost_admin`` picks the one that works.
:class:`VhostView` is an admin bound to one vhost: what the ``amqp_events_rabbitmq_admin``
fixture gives.
"""

from __future__ import annotations

import abc
from typing import Any, Final, TypedDict

from .._errors import AmqpEventsError

__all__ = [
    "ADMIN_TIMEOUT",
    "FULL_PERMISSIONS",
    "PROBE_TIMEOUT",
    "BindingInfo",
    "QueueInfo",
    "VhostAdmin",
    "VhostAdminError",
    "VhostView",
    "sorted_bindings",
]

FULL_PERMISSIONS: Final = {"configure": ".*", "write": ".*", "read": ".*"}
# Long enough for a loaded CI broker, short enough that a hung call does not stall a session.
ADMIN_TIMEOUT: Final = 60.0
PROBE_TIMEOUT: Final = 3.0


class VhostAdminError(AmqpEventsError):
    """A vhost could not be created, deleted or inspected, or no way to do so was found."""


class QueueInfo(TypedDict):
    """A queue as ``amqp_events_rabbitmq_admin.queues()`` returns it, whichever admin answered."""

    name: str
    vhost: str
    durable: bool
    auto_delete: bool
    exclusive: bool | None
    arguments: dict[str, Any]


class BindingInfo(TypedDict):
    """A binding as ``amqp_events_rabbitmq_admin.bindings()`` returns it, whichever admin
    answered."""

    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: dict[str, Any]


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

    @abc.abstractmethod
    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` and everything in it; a vhost that does not exist is no error."""

    @abc.abstractmethod
    def list_vhosts(self) -> list[str]:
        """Names of all vhosts on the broker."""

    @abc.abstractmethod
    def queues(self, vhost: str) -> list[QueueInfo]:
        """Queues of ``vhost`` sorted by name (an unknown vhost has none)."""

    @abc.abstractmethod
    def bindings(self, vhost: str) -> list[BindingInfo]:
        """Bindings of ``vhost``, default-exchange ones included, in a stable order."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def sorted_bindings(bindings: list[BindingInfo]) -> list[BindingInfo]:
    """``bindings`` in the stable order every admin returns them in."""
    return sorted(
        bindings,
        key=lambda b: (b["source"], b["destination_type"], b["destination"], b["routing_key"]),
    )


class VhostView:
    """One test's vhost, inspected: what the ``amqp_events_rabbitmq_admin`` fixture gives.

    ``queues()``, ``queue(name)`` and ``bindings()`` return plain dicts of one shape
    (:class:`QueueInfo`, :class:`BindingInfo`) whether the management API or ``rabbitmqctl``
    answered. The calls block (``rabbitmqctl`` takes about half a second).
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
        queues = self.queues()
        for queue in queues:
            if queue["name"] == name:
                return queue
        names = ", ".join(repr(q["name"]) for q in queues) or "none"
        raise LookupError(f"no queue {name!r} in vhost {self.vhost!r} (queues: {names})")

    def bindings(self) -> list[BindingInfo]:
        """Bindings of this vhost, default-exchange ones included."""
        return self.admin.bindings(self.vhost)

    def __repr__(self) -> str:
        return f"<VhostView {self.vhost!r} via {self.admin.describe()}>"
