"""ReconnectingTransport's word on a publish whose connection died before its confirm.

The in-memory broker confirms at once, so it never loses a publish in flight; these stand-in
sessions do, at the seam where RabbitMQ's sessions do (``Session.publish`` raising
``BrokerConnectionError``). What a failed publish reports: ``PublishOutcomeUnknown`` if a copy
may be on the broker, plain ``PublishError`` if none was ever handed to a live connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_events import (
    BrokerConnectionError,
    Publisher,
    PublishError,
    PublishOutcomeUnknown,
    Route,
    Unroutable,
)
from amqp_events._envelope import Envelope, outgoing_envelope
from amqp_events._observe import Observers
from amqp_events._publisher import Destination
from amqp_events._topology import ConsumerSpec, Topology
from amqp_events._transport._base import OutgoingProperties, Session, SessionHooks
from amqp_events._transport._reconnecting import ReconnectingTransport


class StandInSession:
    """A session whose publishes wait for a confirm that ``cut()`` or ``close()`` denies, or
    that answers at once (``outcome``: None to confirm, an exception to refuse)."""

    def __init__(
        self, hooks: SessionHooks, *, holds: bool, outcome: BaseException | None = None
    ) -> None:
        self._hooks = hooks
        self._outcome = outcome
        self.open = True
        self.holds_publishes = holds
        self.in_flight: list[asyncio.Future[None]] = []
        self.holding = asyncio.Event()  # a publish waits for its confirm
        self.sent = 0

    @property
    def is_open(self) -> bool:
        return self.open

    @property
    def frame_max(self) -> int:
        return 131072

    async def declare(self, topology: Topology) -> None:
        pass

    async def consume(self, spec: ConsumerSpec) -> str:
        return "tag"

    async def cancel(self, consumer_tag: str) -> None:
        pass

    async def message_count(self, queue: str) -> int:
        return 0

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope | None = None,
    ) -> None:
        if not self.open:
            raise BrokerConnectionError("stand-in session is closed")
        self.sent += 1
        if not self.holds_publishes:
            if self._outcome is not None:
                raise self._outcome
            return
        confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_flight.append(confirm)
        self.holding.set()
        await confirm

    def publish_now(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope,
        waiter: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None] | None:
        """As ``publish``, its confirm as a future (the AMQP session's fast path)."""
        if not self.open:
            raise BrokerConnectionError("stand-in session is closed")
        self.sent += 1
        confirm = waiter if waiter is not None else asyncio.get_running_loop().create_future()
        if not self.holds_publishes:
            if self._outcome is not None:
                confirm.set_exception(self._outcome)
            else:
                confirm.set_result(None)
            return confirm
        self.in_flight.append(confirm)
        self.holding.set()
        return confirm

    def publish_failure(
        self, exc: Exception, exchange: str, routing_key: str, confirm_timeout: float | None
    ) -> Exception:
        return exc

    def _die(self, why: str) -> BrokerConnectionError:
        self.open = False
        exc = BrokerConnectionError(why)
        for confirm in self.in_flight:
            if not confirm.done():
                confirm.set_exception(exc)
        return exc

    def cut(self) -> None:
        """The broker drops the connection: in-flight publishes fail, the owner hears of it."""
        self._hooks.session_lost(self, self._die("connection reset by the stand-in broker"))

    async def close(self) -> None:
        self._die("stand-in session closed")


class StandInBroker:
    """Opens a holding session first; then whatever ``next_sessions`` says, or refuses."""

    def __init__(self) -> None:
        self.sessions: list[StandInSession] = []
        self.next_outcomes: list[BaseException | None] = []
        self.down = False

    async def __call__(self, hooks: SessionHooks) -> Session:
        if self.down:
            raise BrokerConnectionError("stand-in broker is down")
        if not self.sessions:
            session = StandInSession(hooks, holds=True)
        else:
            session = StandInSession(hooks, holds=False, outcome=self.next_outcomes.pop(0))
        self.sessions.append(session)
        return session


async def started(broker: StandInBroker, publish_timeout: float) -> ReconnectingTransport:
    transport = ReconnectingTransport(
        broker,
        description="stand-in",
        publish_timeout=publish_timeout,
        reconnect_timeout=None,
        max_reconnect_wait=0.05,
    )
    await transport.connect()
    return transport


class Note(BaseModel):
    text: str = ""


Send = Callable[[ReconnectingTransport], Awaitable[None]]


def publisher_on(transport: ReconnectingTransport) -> Publisher:
    publisher = Publisher(Route(Note, "Note"))
    publisher._attach(
        transport, Destination("events", "stand-in stream"), "svc", "stand-in", Observers()
    )
    return publisher


@pytest.fixture(params=["session-coroutine", "publish-now", "publisher-frame"])
def send(request: pytest.FixtureRequest) -> Send:
    """Each test three ways: through the session's ``publish`` coroutine (no envelope), through
    ``publish_now`` inside the transport's ``publish`` (the AMQP session's path for enveloped
    events), and through ``Publisher.publish``, which starts ``publish_now`` on the open
    session and awaits the confirm in its own frame (``publish_failed`` on failure)."""
    if request.param == "publisher-frame":
        return lambda transport: publisher_on(transport).publish(Note())
    envelope = outgoing_envelope() if request.param == "publish-now" else None
    return lambda transport: transport.publish("events", "Note", b"{}", {}, envelope=envelope)


async def in_flight(
    transport: ReconnectingTransport, broker: StandInBroker, send: Send
) -> asyncio.Task[None]:
    task = asyncio.create_task(in_a_coroutine(send, transport))
    await asyncio.wait_for(broker.sessions[0].holding.wait(), 1.0)
    return task


async def in_a_coroutine(send: Send, transport: ReconnectingTransport) -> None:
    await send(transport)


async def test_close_ends_a_publish_in_flight_as_unknown(send: Send) -> None:
    broker = StandInBroker()
    transport = await started(broker, publish_timeout=30)
    task = await in_flight(transport, broker, send)
    await transport.close()
    with pytest.raises(PublishOutcomeUnknown, match="connection is closed.*may or may not have"):
        await asyncio.wait_for(task, 1.0)


async def test_a_publish_lost_in_flight_then_timed_out_is_unknown(
    send: Send,
) -> None:
    broker = StandInBroker()
    transport = await started(broker, publish_timeout=0.2)
    task = await in_flight(transport, broker, send)
    broker.down = True
    broker.sessions[0].cut()
    with pytest.raises(
        PublishOutcomeUnknown, match=r"not confirmed within 0.2s.*lost before the broker confirmed"
    ):
        await asyncio.wait_for(task, 2.0)
    await transport.close()


async def test_a_publish_lost_in_flight_then_refused_is_still_unknown(
    send: Send,
) -> None:
    # The copy on the lost connection may have been stored, whatever the new one says.
    broker = StandInBroker()
    broker.next_outcomes = [Unroutable("no queue bound")]
    transport = await started(broker, publish_timeout=5)
    task = await in_flight(transport, broker, send)
    broker.sessions[0].cut()
    with pytest.raises(PublishOutcomeUnknown, match="refused on the new connection") as info:
        await asyncio.wait_for(task, 2.0)
    assert isinstance(info.value.__cause__, Unroutable)
    await transport.close()


async def test_a_publish_lost_in_flight_is_sent_again_after_reconnecting(
    send: Send,
) -> None:
    broker = StandInBroker()
    broker.next_outcomes = [None]
    transport = await started(broker, publish_timeout=5)
    task = await in_flight(transport, broker, send)
    broker.sessions[0].cut()
    await asyncio.wait_for(task, 2.0)  # confirmed on the new connection (at-least-once)
    assert broker.sessions[1].sent == 1
    await transport.close()


async def test_a_publish_never_handed_to_a_live_session_is_a_plain_publish_error(
    send: Send,
) -> None:
    broker = StandInBroker()
    transport = await started(broker, publish_timeout=0.2)
    broker.down = True
    broker.sessions[0].open = False  # dead, but its owner has not heard yet
    with pytest.raises(PublishError, match="not confirmed within 0.2s.*never sent") as info:
        await send(transport)
    assert not isinstance(info.value, PublishOutcomeUnknown)
    await transport.close()


class PoisonedSession(StandInSession):
    """The broker closes the whole connection when this publish arrives (as RabbitMQ answers
    a frame it cannot take with a connection-level error)."""

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope | None = None,
    ) -> None:
        self.sent += 1
        raise self._die("FRAME_ERROR: the broker closed the connection")

    def publish_now(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        mandatory: bool,
        confirm_timeout: float | None,
        envelope: Envelope,
        waiter: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None] | None:
        self.sent += 1  # written; the connection dies before its confirm
        confirm = waiter if waiter is not None else asyncio.get_running_loop().create_future()
        confirm.set_exception(self._die("FRAME_ERROR: the broker closed the connection"))
        return confirm


async def test_a_publish_that_kills_every_connection_gives_up_after_three(
    send: Send,
) -> None:
    opened: list[PoisonedSession] = []

    async def open_poisoned(hooks: SessionHooks) -> Session:
        opened.append(PoisonedSession(hooks, holds=False))
        return opened[-1]

    transport = ReconnectingTransport(
        open_poisoned,
        description="poisoned",
        publish_timeout=30.0,
        reconnect_timeout=None,
        max_reconnect_wait=0.05,
    )
    await transport.connect()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(PublishOutcomeUnknown, match="3 connections died"):
                await send(transport)
        assert sum(s.sent for s in opened) == 3  # not one reconnect per second for 30 s
    finally:
        await transport.close()
