"""Connection: the lifecycle of one service's link to the broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Self

from . import _naming as naming
from ._consumer import QueueDispatcher
from ._errors import BrokerConnectionError, ConfigurationError, ReconnectFailed
from ._failures import FailureRouter
from ._handlers import resolve
from ._inflight import InFlight
from ._observe import Observer, Observers
from ._publisher import Publisher
from ._requests import PendingRequests, Responder
from ._retry import RetryPolicy
from ._router import EventRouter, H
from ._setup import Setup, SetupBuilder
from ._topology import ConsumerSpec, Topology
from ._url import check_urls, redact
from .transports import transport_for
from .transports._base import Transport

__all__ = ["Connection"]

log = logging.getLogger(__name__)

try:
    _VERSION = version("amqp-events")
except PackageNotFoundError:  # running from a source tree that was not installed
    _VERSION = "0"


class Connection:
    """One service's connection to the broker.

    ``Connection("order-service", "amqp://guest:guest@localhost/")``; ``memory://`` runs on the
    in-process broker. ``await conn.start(*setups)`` declares the topology and starts consumers;
    ``await conn.close()`` stops consuming, lets running handlers finish, and closes. Also an async
    context manager that closes on exit.

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
        url: str | Sequence[str] = "memory://",
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
        self._urls = check_urls(url)
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
        self._transport: Transport | None = None
        self._publishers: list[Publisher] = []
        self._responder = Responder(service_name)
        self._pending: list[PendingRequests] = []
        self._failure_routers: list[FailureRouter] = []
        self._observers = Observers()
        self._consumed_queues: list[str] = []
        self._topology = Topology()
        self._in_flight = InFlight()
        self._stopped = asyncio.Event()
        self._state = "new"  # new -> starting -> started -> closed
        self._closing: asyncio.Task[None] | None = None

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

    # -- registration -----------------------------------------------------------------------

    def event_stream_consumer(
        self,
        routing_key: str,
        event_type: Any = None,
        *,
        exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` on this service's durable event stream queue."""
        self._check_not_started("register a consumer")
        return self._router.event_stream_consumer(
            routing_key, event_type, exchange=exchange, retry=retry
        )

    def transient_event_stream_consumer(
        self,
        routing_key: str,
        event_type: Any = None,
        *,
        exchange: str = naming.DEFAULT_EVENT_EXCHANGE,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator: consume ``routing_key`` on an exclusive, auto-delete queue of its own."""
        self._check_not_started("register a consumer")
        return self._router.transient_event_stream_consumer(
            routing_key, event_type, exchange=exchange, retry=retry
        )

    def service_request_consumer(
        self, routing_key: str, event_type: Any = None, *, retry: RetryPolicy | None = None
    ) -> Callable[[H], H]:
        """Decorator: answer requests with ``routing_key``; the handler returns the response."""
        self._check_not_started("register a consumer")
        return self._router.service_request_consumer(routing_key, event_type, retry=retry)

    def service_response_consumer(
        self,
        target_service: str,
        routing_key: str,
        event_type: Any = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> Callable[[H], H]:
        """Decorator: handle responses from ``target_service`` to requests with ``routing_key``."""
        self._check_not_started("register a consumer")
        return self._router.service_response_consumer(
            target_service, routing_key, event_type, retry=retry
        )

    def include(self, router: EventRouter) -> None:
        """Attach the handlers of an ``EventRouter``; they are set up by ``start``."""
        self._check_not_started("include a router")
        if not isinstance(router, EventRouter):
            raise ConfigurationError(f"include() takes an EventRouter, got {router!r}")
        if router in self._included:
            raise ConfigurationError("this EventRouter is already included")
        self._included.append(router)

    def _check_not_started(self, what: str) -> None:
        if self._state != "new":
            raise ConfigurationError(
                f"cannot {what}: connection {self._service!r} is {self._state}"
            )

    # -- lifecycle --------------------------------------------------------------------------

    def _build(self, setups: tuple[Setup, ...]) -> SetupBuilder:
        builder = SetupBuilder(self._service)
        all_setups = [*self._router.setups]
        for router in self._included:
            all_setups.extend(router.setups)
        all_setups.extend(setups)
        for setup in all_setups:
            if not callable(setup):
                raise ConfigurationError(f"start() takes setup functions, got {setup!r}")
            setup(builder)
        return builder

    def _dispatchers(self, builder: SetupBuilder) -> list[QueueDispatcher]:
        limit = asyncio.Semaphore(builder.concurrency_limit) if builder.concurrency_limit else None
        dispatchers = []
        for queue, consumers in builder.consumers.items():
            failures = FailureRouter(
                queue,
                self._service,
                consumers.delays_ms(builder.retry_policy),
                self._observers,
                in_flight=self._in_flight,
                redeclare=self._redeclare,
            )
            self._failure_routers.append(failures)
            handlers = [
                resolve(spec, builder.type_mapping, builder.retry_policy)
                for spec in consumers.handlers
            ]
            dispatchers.append(
                QueueDispatcher(
                    queue,
                    handlers,
                    self._in_flight,
                    failures,
                    responder=self._responder if queue in builder.request_queues else None,
                    pending=builder.pending.get(queue),
                    limit=limit,
                    observers=self._observers,
                )
            )
        return dispatchers

    async def start(self, *setups: Setup) -> None:
        """Apply ``setups``, check them all, then declare the topology and start consuming.

        Every configuration error is raised before anything touches the broker.
        """
        self._check_not_started("start")
        builder = self._build(setups)
        builder.finish()
        self._consumed_queues = builder.queues_with_retries()
        self._topology = builder.topology
        dispatchers = self._dispatchers(builder)
        self._state = "starting"
        transport = transport_for(
            self._urls,
            connection_name=naming.connection_name(self._service, _VERSION),
            connect_timeout=self._connect_timeout,
            publish_timeout=self._publish_timeout,
            reconnect_timeout=self._reconnect_timeout,
            ssl_context=self._ssl_context,
            topology_check_interval=self._topology_check_interval,
        )
        try:
            await transport.connect()
            self._transport = transport
            for listener in builder.close_listeners:
                transport.add_close_callback(listener)
            transport.add_close_callback(self._on_transport_closed)
            await transport.declare(builder.topology)
            self._responder.transport = transport
            for failures in self._failure_routers:
                failures.transport = transport
            self._pending = list(builder.pending.values())
            for publisher, destination in builder.publishers:
                publisher._attach(
                    transport, destination, self._service, repr(self), self._observers
                )
                self._publishers.append(publisher)
            for dispatcher in dispatchers:
                await transport.consume(
                    ConsumerSpec(dispatcher.queue, dispatcher.on_delivery, builder.prefetch)
                )
        except BaseException:
            await self._teardown(transport)
            self._state = "closed"
            raise
        self._state = "started"
        log.info("%s started: %d queue(s) consumed", self._service, len(dispatchers))

    async def _redeclare(self) -> None:
        """Declare the whole topology again: an operator may have deleted one of our queues."""
        transport = self._transport
        if transport is not None:
            await transport.declare(self._topology)

    def _on_transport_closed(self, exc: BaseException | None) -> None:
        if isinstance(exc, ReconnectFailed):
            self._failure = exc
            self._stopped.set()

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
        self._in_flight.stopping = True
        transport = self._transport
        if transport is not None:
            await transport.stop_consuming()
            if self._in_flight.count:
                try:
                    await asyncio.wait_for(self._in_flight.wait_idle(), self._shutdown_timeout)
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
        self._stopped.set()

    async def _teardown(self, transport: Transport) -> None:
        for publisher in self._publishers:
            publisher._detach()
        self._publishers.clear()
        for pending in self._pending:
            pending.fail_all(BrokerConnectionError(f"connection {self._service!r} closed"))
        self._pending.clear()
        self._responder.transport = None
        for failures in self._failure_routers:
            failures.transport = None
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
        ``ReconnectFailed`` when the broker stayed unreachable for ``reconnect_timeout``.
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
