"""Connection: the lifecycle of one service's link to the broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel

from . import _naming as naming
from ._background import BackgroundJobs
from ._errors import (
    BrokerConnectionError,
    ConfigurationError,
    ConsumerLost,
    PublishError,
    ReconnectFailed,
)
from ._event_router import EventRouter, H, Registrations
from ._handlers import Handler
from ._inflight import InFlight
from ._message_log import MessageLogObserver
from ._observe import Observer, Observers
from ._publisher import Publisher
from ._requests import PendingRequests, send_service_response
from ._setup import Setup
from ._setup._instruments import instrument_for
from ._startup import check_publishers_free, log_topology, make_dispatchers, plan_of, resolve_all
from ._topology import ConsumerSpec, Topology
from ._transport import transport_for
from ._transport._base import Transport
from ._url import check_urls, redact, url_or_environment
from ._version import VERSION

__all__ = ["Connection"]

log = logging.getLogger(__name__)


class Connection(Registrations):
    """One service's connection to the broker.

    ``Connection("order-service", "amqp://guest:guest@localhost/")``; without a URL, the
    ``AMQP_URL`` environment variable is used, and if neither is set it is an error
    (``ConfigurationError``): a service that forgot its URL must not look healthy.
    ``memory://`` (asked for explicitly) runs on the in-process broker.
    ``await conn.start(*setups)`` declares the topology and starts consumers; ``await
    conn.close()`` stops consuming, lets running handlers finish, and closes. Also an async
    context manager that closes on exit. The consumer decorators (``@conn.event_stream_consumer``,
    ``@conn.stream_consumer``, ...) are ``EventRouter``'s.

    A lost connection is restored by itself, with every exchange, queue, binding and consumer;
    several hosts (``amqp://u:p@h1,h2/`` or a list of URLs) are tried in turn. Options:

    - ``publish_timeout``: how long a publish waits for its confirm, including a reconnection,
      before it raises ``PublishError`` (``PublishOutcomeUnknown`` when the message was sent
      and may have been stored);
    - ``reconnect_timeout``: how long to keep trying to reconnect before giving up
      (``ReconnectFailed``; None: forever);
    - ``shutdown_timeout``: how long ``close()`` lets running handlers finish;
    - ``topology_check_interval``: how often every exchange, queue and binding is declared
      again, restoring what an operator deleted (an exchange takes its bindings with it
      without telling any consumer); None: never;
    - ``ssl_context``: for ``amqps://``.
    """

    def __init__(
        self,
        service_name: str,
        url: str | Sequence[str] | None = None,
        *,
        publish_timeout: float = 30.0,
        reconnect_timeout: float | None = 300.0,
        shutdown_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        topology_check_interval: float | None = 60.0,
    ) -> None:
        if not isinstance(service_name, str) or not service_name.strip():
            raise ConfigurationError(f"service name must be a non-empty str, got {service_name!r}")
        for name, value in (
            ("publish_timeout", publish_timeout),
            ("shutdown_timeout", shutdown_timeout),
            ("connect_timeout", connect_timeout),
            ("reconnect_timeout", 1.0 if reconnect_timeout is None else reconnect_timeout),
            (
                "topology_check_interval",
                1.0 if topology_check_interval is None else topology_check_interval,
            ),
        ):
            if not value > 0:
                raise ConfigurationError(f"{name} must be positive, got {value!r}")
        self._urls = check_urls(url_or_environment(service_name, url))
        self._service = service_name
        self._url = ",".join(self._urls)
        self._publish_timeout = publish_timeout
        self._reconnect_timeout = reconnect_timeout
        self._shutdown_timeout = shutdown_timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._topology_check_interval = topology_check_interval
        self._failure: BaseException | None = None
        self._router = EventRouter()
        self._included: list[EventRouter] = []
        self._setups: list[Setup] = []
        self._transport: Transport | None = None
        self._publishers: list[Publisher] = []
        self._pending: list[PendingRequests] = []
        self._observers = Observers()
        self._consumed_queues: list[str] = []
        self._topology = Topology()
        self._in_flight = InFlight()
        self._stopped = asyncio.Event()
        self._state = "new"  # new -> starting -> started -> closed
        self._closing: asyncio.Task[None] | None = None
        self._jobs = BackgroundJobs(service_name, self._on_job_failed)

    def __repr__(self) -> str:
        return f"Connection({self._service!r}, {self.url!r}, state={self._state!r})"

    @property
    def service_name(self) -> str:
        """The service's name: part of its queue names and the ``service`` header it sends."""
        return self._service

    @property
    def state(self) -> str:
        """``"new"``, ``"starting"``, ``"started"`` or ``"closed"``: for readiness checks."""
        return self._state

    @property
    def url(self) -> str:
        """The broker URL(s), password redacted."""
        return ",".join(redact(u) for u in self._urls)

    # -- registration (the decorators are Registrations', written once) ------------------

    def _register(self, make: Callable[[Handler], Setup]) -> Callable[[H], H]:
        self._check_not_started("register a consumer")
        return self._router._register(make)

    def include(self, router: EventRouter) -> None:
        """Attach the handlers of an ``EventRouter``; they are set up by ``start``."""
        self._check_not_started("include a router")
        if not isinstance(router, EventRouter):
            raise ConfigurationError(f"include() takes an EventRouter, got {router!r}")
        if router in self._included:
            raise ConfigurationError("this EventRouter is already included")
        self._included.append(router)

    def use(self, *setups: Setup) -> None:
        """Add setups that ``start()`` applies, before those it is given: so the connection
        carries its whole setup, and ``conn.run()`` or ``amqp-events run module:conn`` starts it
        as it is. ``conn.use(event_stream_publisher(p))`` then ``await conn.run()`` is
        ``await conn.run(event_stream_publisher(p))``."""
        self._check_not_started("add setups")
        for setup in setups:
            if not callable(setup):
                raise ConfigurationError(f"use() takes setup functions, got {setup!r}")
        self._setups.extend(setups)

    def _all_setups(self, setups: tuple[Setup, ...] = ()) -> list[Setup]:
        """Decorated handlers, included routers, ``use()``d setups, then ``setups``."""
        return [
            *self._router.setups,
            *(s for r in self._included for s in r.setups),
            *self._setups,
            *setups,
        ]

    def _check_not_started(self, what: str) -> None:
        if self._state != "new":
            raise ConfigurationError(
                f"cannot {what}: connection {self._service!r} is {self._state}"
            )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, *setups: Setup) -> None:
        """Apply ``setups``, check them all, then declare the topology and start consuming.

        Every configuration error is raised before anything touches the broker.
        """
        self._check_not_started("start")
        # Up to the transport's creation nothing is kept: a setup error leaves the connection
        # "new", to be started again with the setup fixed.
        plan = plan_of(self._service, self._all_setups(setups))
        resolved = resolve_all(plan)
        check_publishers_free(plan)
        # Metrics, tracing: set before the dispatchers are made, which pick their path by it.
        self._observers.instrument = instrument_for(plan, self._service, self._urls)
        transport = transport_for(
            self._urls,
            connection_name=naming.connection_name(self._service, VERSION),
            connect_timeout=self._connect_timeout,
            publish_timeout=self._publish_timeout,
            reconnect_timeout=self._reconnect_timeout,
            ssl_context=self._ssl_context,
            topology_check_interval=self._topology_check_interval,
        )
        dispatchers = make_dispatchers(
            self._service,
            plan,
            resolved,
            transport,
            in_flight=self._in_flight,
            observers=self._observers,
            redeclare=self._redeclare,
        )
        self._state = "starting"
        self._consumed_queues = plan.queues_with_retries()
        self._topology = plan.topology
        for callback in plan.message_loggers:
            self._observers.attach(MessageLogObserver(callback))
        log.info("%s: connecting to %s", self._service, self.url)
        try:
            await transport.connect()
            self._transport = transport
            for listener in plan.close_listeners:
                transport.add_close_callback(listener)
            transport.add_close_callback(self._on_transport_closed)
            await transport.declare(plan.topology)
            log_topology(self._service, plan.topology)
            self._pending = list(plan.pending.values())
            for publisher, destination in plan.publishers:
                publisher._attach(
                    transport,
                    destination,
                    self._service,
                    f"connection {self._service!r}",
                    self._observers,
                )
                self._publishers.append(publisher)
            for use in plan.transport_users:
                use(transport, self._observers.instrument)
            for dispatcher in dispatchers:
                await transport.consume(
                    ConsumerSpec(dispatcher.queue, dispatcher.consumer_callback, plan.prefetch)
                )
        except BaseException:
            # Moves under way stop trying and requeue their messages, as at a close.
            self._in_flight.stopping = True
            await self._teardown(transport)
            self._state = "closed"
            raise
        self._state = "started"
        self._jobs.start(plan.tasks)
        log.info(
            "%s: started, consuming %d queue(s): %s",
            self._service,
            len(dispatchers),
            ", ".join(d.queue for d in dispatchers) or "none",
        )

    async def publish_service_response(
        self,
        target_service: str,
        routing_key: str,
        response: BaseModel,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Send ``response`` to ``target_service`` as a response to its request ``routing_key``
        (goamqp's ``PublishServiceResponse``), without a request handler returning it.

        For a request handler that answers later, or not at all: it takes the caller from the
        request's headers (``headers.service``). The response goes to this service's
        ``<service>.headers.exchange.response`` with header ``service`` = ``target_service``,
        which routes it to the caller's ``service_response_consumer``; the exchange is declared
        by a ``service_request_consumer`` of this connection, so one must be set up. Waits for
        the broker's confirm; raises ``Unroutable`` when ``target_service`` has no response queue
        bound for ``routing_key``. It carries no correlation id: a caller awaiting
        ``publisher.request(...)`` gets only what the request handler returns.
        """
        if self._transport is None or self._state != "started":
            raise PublishError(
                f"cannot publish a response to {target_service!r}: connection "
                f"{self._service!r} is {self._state}, not started"
            )
        await send_service_response(
            self._transport,
            self._service,
            self._topology,
            target_service,
            routing_key,
            response,
            headers,
            self._observers.instrument,
        )
        observer = self._observers.current
        if observer is not None:
            observer.published(
                self._service, naming.response_exchange(self._service), routing_key, response
            )

    async def _redeclare(self) -> None:
        """Declare the whole topology again: an operator may have deleted one of our queues."""
        transport = self._transport
        if transport is not None:
            await transport.declare(self._topology)

    def _on_job_failed(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._stopped.set()

    def _on_transport_closed(self, exc: BaseException | None) -> None:
        if isinstance(exc, (ReconnectFailed, ConsumerLost)):
            self._failure = exc
            self._stopped.set()
        elif exc is not None and self._observers.instrument is not None:
            self._observers.instrument.connection_lost(self._service)  # it reconnects now

    async def close(self) -> None:
        """Stop consuming, let running handlers finish (up to ``shutdown_timeout``), close.

        Handlers still running after ``shutdown_timeout`` are cancelled; their messages go back
        to their queues. A second call waits for the first to finish. A handler may close its
        own connection: the close does not wait for it (its message comes back, unacked).
        """
        self._in_flight.forget_current()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._state = "closed"
        await self._jobs.stop(self._shutdown_timeout)
        self._in_flight.stopping = True
        transport = self._transport
        if transport is not None:
            await transport.stop_consuming()
            log.info(
                "%s: closing; waiting up to %.1fs (shutdown_timeout) for %d running handler(s)",
                self._service,
                self._shutdown_timeout,
                self._in_flight.count,
            )
            if self._in_flight.count:
                try:
                    # Not wait_for: on 3.11 it can swallow a cancellation of close().
                    async with asyncio.timeout(self._shutdown_timeout):
                        await self._in_flight.wait_idle()
                except TimeoutError:
                    log.warning(
                        "%s: %d handler(s) still running after %.1fs are cancelled; their "
                        "messages go back to the queue",
                        self._service,
                        self._in_flight.count,
                        self._shutdown_timeout,
                    )
                    await self._in_flight.cancel_all()
            await self._teardown(transport)
            log.info("%s: closed", self._service)
        self._stopped.set()

    async def _teardown(self, transport: Transport) -> None:
        for publisher in self._publishers:
            publisher._detach()
        self._publishers.clear()
        for pending in self._pending:
            pending.fail_all(BrokerConnectionError(f"connection {self._service!r} closed"))
        self._pending.clear()
        self._transport = None
        await transport.close()

    # -- for amqp_events.testing ------------------------------------------------------------

    def _attach_observer(self, observer: Observer) -> None:
        self._observers.attach(observer)

    def _detach_observer(self, observer: Observer) -> None:
        self._observers.detach(observer)

    async def _is_idle(self) -> bool:
        """No handler running, and nothing ready in any queue this connection consumes or
        retries through."""
        transport = self._transport
        if transport is None or self._in_flight.count:
            return self._in_flight.count == 0
        for queue in self._consumed_queues:
            if await transport.message_count(queue):
                return False
        return self._in_flight.count == 0

    async def run(self, *setups: Setup) -> None:
        """Serve until SIGINT or SIGTERM, then close gracefully.

        Starts the connection first when it is not started yet; the signals are handled from
        before the start, so a SIGTERM during start-up also ends in a clean close. Raises
        ``ReconnectFailed`` when the broker stayed unreachable for ``reconnect_timeout``, and
        ``ConsumerLost`` when the broker cancelled a consumer (its queue deleted) that could
        not be restored.
        """
        if self._state != "new" and setups:
            raise ConfigurationError("run() got setups, but the connection is already started")
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stopped.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            if self._state == "new":
                await self.start(*setups)
            await self._stopped.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.close()
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
