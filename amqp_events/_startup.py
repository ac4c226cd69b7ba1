"""What ``Connection.start`` makes of its setups, before and after it reaches the broker: the
plan every setup recorded, its handlers resolved, one dispatcher per queue, the log of what was
declared. All checks run here, before anything touches the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from ._dispatch import QueueDispatcher
from ._errors import ConfigurationError
from ._failures import FailureRouter
from ._handlers import ResolvedHandler, resolve
from ._inflight import InFlight
from ._observe import Observers
from ._requests import Responder
from ._setup import Setup, SetupBuilder
from ._setup._builder import SetupPlan
from ._topology import Topology
from ._transport._base import Transport
from ._versions import Versions

__all__ = ["check_publishers_free", "log_topology", "make_dispatchers", "plan_of", "resolve_all"]

log = logging.getLogger(__name__)


def plan_of(service: str, setups: Iterable[Setup]) -> SetupPlan:
    """Every setup applied to one builder, and what only the whole plan decides."""
    builder = SetupBuilder(service)
    for setup in setups:
        if not callable(setup):
            raise ConfigurationError(f"start() takes setup functions, got {setup!r}")
        setup(builder)
    plan = builder._plan
    plan.finish()
    Versions(plan.type_mapping, plan.upcasters).check()
    return plan


def resolve_all(plan: SetupPlan) -> dict[str, list[ResolvedHandler]]:
    """Each consumed queue's handlers, resolved: raises ConfigurationError for any of them."""
    return {
        queue: [resolve(spec, plan.type_mapping, plan.retry_policy) for spec in consumers.handlers]
        for queue, consumers in plan.consumers.items()
    }


def check_publishers_free(plan: SetupPlan) -> None:
    """A publisher already attached to another connection is a setup error, found early."""
    for publisher, _ in plan.publishers:
        target = publisher._target
        if target is not None:
            raise ConfigurationError(
                f"publisher with routes {publisher._describe_routes()} is already attached to "
                f"{target.description}; create one Publisher per setup"
            )


def make_dispatchers(
    service: str,
    plan: SetupPlan,
    resolved: dict[str, list[ResolvedHandler]],
    transport: Transport,
    *,
    in_flight: InFlight,
    observers: Observers,
    redeclare: Callable[[], Awaitable[None]],
) -> list[QueueDispatcher]:
    """One dispatcher per consumed queue, with its failure router, over ``transport``."""
    limit = asyncio.Semaphore(plan.concurrency_limit) if plan.concurrency_limit else None
    versions = Versions(plan.type_mapping, plan.upcasters)
    responder = Responder(service, transport, observers) if plan.request_queues else None
    return [
        QueueDispatcher(
            queue,
            resolved[queue],
            in_flight,
            FailureRouter(
                queue,
                service,
                consumers.delays_ms(plan.retry_policy),
                transport,
                observers,
                in_flight=in_flight,
                redeclare=redeclare,
            ),
            observers,
            versions,
            responder=responder if queue in plan.request_queues else None,
            pending=plan.pending.get(queue),
            limit=limit,
        )
        for queue, consumers in plan.consumers.items()
    ]


def log_topology(service: str, topology: Topology) -> None:
    """At INFO, one line per declaration: an operator sees what this service relies on."""
    for exchange in topology.exchanges:
        log.info("%s: declared exchange %r (%s)", service, exchange.name, exchange.type)
    for queue in topology.queues:
        kind = "durable" if queue.durable else "transient"
        if queue.exclusive:
            kind += ", exclusive"
        log.info("%s: declared queue %r (%s)", service, queue.name, kind)
    for binding in topology.bindings:
        log.info(
            "%s: bound queue %r to exchange %r with %r%s",
            service,
            binding.queue,
            binding.exchange,
            binding.routing_key,
            f" and arguments {dict(binding.arguments)!r}" if binding.arguments else "",
        )
