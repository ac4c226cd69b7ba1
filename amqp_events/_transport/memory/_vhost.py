"""``Vhost``: one vhost's exchanges, queues and connections, and the topology operations on
them (declare, bind, unbind, delete) with RabbitMQ's refusals. Connections, publishing and
the queue rules use it; ``MemoryBroker`` is its public face."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from typing import TYPE_CHECKING

from ..._errors import BrokerError
from ..._topology import BindingSpec, ExchangeSpec, QueueSpec
from . import _refusals as refusals
from ._activity import Activity
from ._arguments import (
    QUEUE_EQUIVALENCE_ARGS,
    check_args,
    check_field,
    validate_queue_arguments,
    validate_quorum_queue,
    validate_x_match,
)
from ._clock import Clock, VirtualClock
from ._exchanges import EXCHANGE_TYPES, Exchange, binding_key, predeclared_exchanges
from ._queues import Queue

if TYPE_CHECKING:
    from ._connection import Channel

__all__ = ["Vhost"]

log = logging.getLogger(__name__)


class Vhost:
    """The exchanges, queues and open connections (channels) of a broker named ``name``, the
    consumer callbacks in flight (``track``, ``wake``, ``wait_until_idle``), and the ``clock``
    its TTLs read: real time, or with ``virtual_time`` a clock that skips ahead while idle."""

    def __init__(self, name: str, *, virtual_time: bool = False) -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = predeclared_exchanges()
        self.queues: dict[str, Queue] = {}
        self.channels: dict[Channel, None] = {}
        self.consumer_ids = itertools.count(1)
        if virtual_time:
            self.clock: Clock = VirtualClock(self._is_idle)
            self._activity = Activity(name, on_wake=self.clock.poke)
        else:
            self.clock = Clock()
            self._activity = Activity(name)

    def reset(self) -> None:
        """Forget every channel, queue and non-predeclared exchange, without notifying anyone."""
        for channel in self.channels:
            channel.drop()
        self.channels.clear()
        for q in self.queues.values():
            q.drop()
        self.queues.clear()
        self.exchanges = predeclared_exchanges()
        self._activity.tasks.clear()
        self.wake()

    # -- activity ------------------------------------------------------------------------------

    def track(self, task: asyncio.Future[None]) -> None:
        """Keep a consumer callback's task until it is done (for ``wait_until_idle``)."""
        self._activity.track(task)

    def wake(self) -> None:
        """Let ``wait_until_idle`` check again: something changed."""
        self._activity.wake()

    async def wait_until_idle(self, timeout: float) -> None:
        """Return once idle, and on virtual time once no message expiry is pending either;
        ``TimeoutError`` saying what is busy after ``timeout`` s."""
        await self._activity.wait(self._is_quiet, self._busy, timeout)

    def _is_quiet(self) -> bool:
        return self._is_idle() and not self.clock.pending()

    def _is_idle(self) -> bool:
        if self._activity.tasks:
            return False
        if any(channel.unsettled_count() for channel in self.channels):
            return False
        return not any(q.busy for q in self.queues.values())

    def _busy(self) -> str:
        unacked = sum(channel.unsettled_count() for channel in self.channels)
        waiting = [q.name for q in self.queues.values() if q.busy]
        running = len(self._activity.tasks)
        pending = self.clock.pending()
        expiries = f", {pending} queues with messages to expire (virtual time)" if pending else ""
        return (
            f"{running} consumer callbacks running, {unacked} deliveries unacked, "
            f"ready messages in consumed queues {waiting}{expiries}"
        )

    # -- lookups -------------------------------------------------------------------------------

    def queue_or_404(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise refusals.no_queue(name)
        return q

    def exchange_or_404(self, name: str) -> Exchange:
        x = self.exchanges.get(name)
        if x is None:
            raise refusals.no_exchange(name)
        return x

    # -- declarations --------------------------------------------------------------------------

    def declare_exchange(self, spec: ExchangeSpec) -> None:
        name = spec.name
        if name == "":
            raise refusals.default_exchange_refused()
        if spec.type not in EXCHANGE_TYPES:
            raise BrokerError(503, f"COMMAND_INVALID - unknown exchange type '{spec.type}'")
        x = self.exchanges.get(name)
        if x is None:
            if name.startswith("amq."):
                raise refusals.reserved_name("exchange", name)
            self.exchanges[name] = Exchange(
                name,
                spec.type,
                durable=spec.durable,
                auto_delete=spec.auto_delete,
                internal=spec.internal,
                arguments=spec.arguments,
            )
            log.debug("memory broker %r: exchange %r declared", self.name, name)
            return
        what = f"exchange '{name}'"
        check_field(what, "type", spec.type, x.type)
        check_field(what, "durable", spec.durable, x.durable)
        check_field(what, "auto_delete", spec.auto_delete, x.auto_delete)
        check_field(what, "internal", spec.internal, x.internal)
        check_args(what, ("alternate-exchange",), spec.arguments, x.arguments)

    def declare_queue(self, spec: QueueSpec, owner: Channel | None) -> str:
        name = spec.name or f"amq.gen-{secrets.token_urlsafe(16)}"
        q = self.queues.get(name)
        if q is not None:
            if q.owner is not owner:
                raise refusals.resource_locked(name)
            what = f"queue '{name}'"
            check_field(what, "durable", spec.durable, q.durable)
            check_field(what, "auto_delete", spec.auto_delete, q.auto_delete)
            check_args(what, QUEUE_EQUIVALENCE_ARGS, spec.arguments, q.arguments)
            q.arm_expiry()  # a redeclaration counts as use for x-expires
            return name
        if spec.name.startswith("amq."):
            raise refusals.reserved_name("queue", name)
        validate_queue_arguments(name, spec.arguments)
        if spec.arguments.get("x-queue-type") == "quorum":
            validate_quorum_queue(name, spec)
        q = Queue(self, spec, name, owner)
        self.queues[name] = q
        if owner is not None:
            owner.own(q)
        q.arm_expiry()
        log.debug("memory broker %r: queue %r declared", self.name, name)
        return name

    def bind(self, spec: BindingSpec, channel: Channel | None) -> None:
        x, q = self._binding_ends(spec, channel)
        if x.type == "headers":
            validate_x_match(spec.arguments)
        x.add_binding(q, spec)

    def unbind(self, spec: BindingSpec, channel: Channel | None) -> None:
        x, q = self._binding_ends(spec, channel)
        key = binding_key(q.name, spec)
        if not x.remove_binding(key):
            return
        q.unbound(x.name, key)
        self._maybe_auto_delete_exchange(x)

    def _binding_ends(self, spec: BindingSpec, channel: Channel | None) -> tuple[Exchange, Queue]:
        if spec.exchange == "":
            raise refusals.default_exchange_refused()
        x = self.exchange_or_404(spec.exchange)
        q = self.queue_or_404(spec.queue)
        if channel is not None and q.owner is not None and q.owner is not channel:
            raise refusals.resource_locked(q.name)
        return x, q

    def bindings(self, queue: str | None) -> list[BindingSpec]:
        """Explicit bindings, optionally of one queue."""
        return [
            spec
            for x in self.exchanges.values()
            for q, spec in x.bindings.values()
            if queue is None or q.name == queue
        ]

    # -- deletion ------------------------------------------------------------------------------

    def delete_exchange(self, name: str) -> None:
        if name == "" or name.startswith("amq."):
            raise BrokerError(
                403, f"ACCESS_REFUSED - operation not permitted on the default exchange {name!r}"
            )
        x = self.exchange_or_404(name)
        for q, _spec in x.bindings.values():
            q.unbound(name)
        x.bindings.clear()
        x.route_cache.clear()
        self.exchanges.pop(name, None)
        log.debug("memory broker %r: exchange %r deleted", self.name, name)

    def _maybe_auto_delete_exchange(self, x: Exchange) -> None:
        if x.unbound():
            self.exchanges.pop(x.name, None)
            log.debug("memory broker %r: auto-delete exchange %r deleted", self.name, x.name)

    def after_consumer_left(self, q: Queue) -> None:
        """A consumer left ``q``: delete it if auto-delete and unused, else arm ``x-expires``."""
        if q.deleted or q.consumers:
            return
        if q.auto_delete and q.had_consumer:
            self.delete_queue(q)
        else:
            q.arm_expiry()

    def delete_queue(self, q: Queue) -> int:
        """Delete ``q``, cancel its consumers (their ``on_cancel`` hooks are called) and
        return how many ready messages it held."""
        if q.deleted:
            return 0
        bindings, consumers, count = q.delete()
        self.queues.pop(q.name, None)
        for exchange_name, key in bindings:
            x = self.exchanges.get(exchange_name)
            if x is not None and x.remove_binding(key):
                self._maybe_auto_delete_exchange(x)
        for consumer in consumers:
            consumer.connection.cancelled_by_broker(consumer.tag, q.name)
        if q.owner is not None:
            q.owner.disown(q)
        log.debug("memory broker %r: queue %r deleted", self.name, q.name)
        self.wake()
        return count
