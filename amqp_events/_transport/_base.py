"""The seam that carries all broker I/O. The rest of amqp-events never imports aio-pika."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from .._envelope import Envelope
from .._errors import BrokerError, PublishError
from .._topology import ConsumerSpec, Topology

__all__ = [
    "CloseCallback",
    "Delivery",
    "OutgoingProperties",
    "PublishItem",
    "Session",
    "SessionHooks",
    "SessionOpener",
    "Transport",
    "publish_refused",
]

CloseCallback = Callable[[BaseException | None], None]


class PublishItem:
    """One publish of a batch (``Transport.publish_batch``): what ``publish`` takes."""

    __slots__ = ("body", "envelope", "exchange", "headers", "mandatory", "routing_key")

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        mandatory: bool,
        envelope: Envelope,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.headers = headers
        self.mandatory = mandatory
        self.envelope = envelope


class OutgoingProperties:
    """Optional AMQP properties of a published message; the common case passes none."""

    __slots__ = (
        "content_type",
        "correlation_id",
        "expiration",
        "message_id",
        "reply_to",
        "timestamp",
    )

    def __init__(
        self,
        *,
        content_type: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_id: str | None = None,
        expiration: int | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        self.content_type = content_type
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.message_id = message_id
        self.expiration = expiration  # ms
        self.timestamp = timestamp  # whole seconds on the wire


class Delivery:
    """One message delivered to a consumer. Settle it exactly once: ``ack`` or ``reject``.

    Transports subclass it; one is allocated per message, so it keeps to ``__slots__``.
    """

    __slots__ = (
        "body",
        "content_type",
        "correlation_id",
        "exchange",
        "headers",
        "message_id",
        "redelivered",
        "reply_to",
        "routing_key",
        "settled",
        "timestamp",
    )

    def __init__(
        self,
        body: bytes,
        routing_key: str,
        exchange: str,
        headers: Mapping[str, Any],
        redelivered: bool,
        content_type: str | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        self.body = body
        self.routing_key = routing_key
        self.exchange = exchange
        self.headers = headers
        self.redelivered = redelivered
        self.content_type = content_type
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.timestamp = timestamp  # the AMQP timestamp property
        self.settled = False  # set by ack and reject: a delivery is settled once

    async def ack(self) -> None:
        raise NotImplementedError

    async def reject(self, *, requeue: bool) -> None:
        raise NotImplementedError

    async def ack_processed(self) -> None:
        """Ack, and return once the broker processed the ack, not only received it: a process
        that dies right after cannot lose it (its socket's unread data would reset the
        connection and discard what was in flight)."""
        await self.ack()


class SessionHooks(Protocol):
    """What a session tells its owner: the connection died, or the broker cancelled a consumer."""

    def session_lost(self, session: Session, exc: BaseException) -> None: ...

    def consumer_cancelled(self, session: Session, consumer_tag: str) -> None: ...


class Session(Protocol):
    """One live connection to a broker. It does not reconnect: ``ReconnectingTransport`` does.

    Operations on a session whose connection is gone raise ``BrokerConnectionError``.
    """

    @property
    def is_open(self) -> bool: ...

    @property
    def frame_max(self) -> int:
        """The largest frame this connection carries, in bytes, as negotiated with the broker:
        a message's content header frame (properties and headers) must fit in it."""
        ...

    async def declare(self, topology: Topology) -> None: ...

    async def consume(self, spec: ConsumerSpec) -> str:
        """Start a consumer; return its tag."""
        ...

    async def cancel(self, consumer_tag: str) -> None: ...

    async def message_count(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those delivered and unacknowledged)."""
        ...

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
        """Publish and wait for the confirm: PublishError if refused, BrokerConnectionError if
        the connection went away first."""
        ...

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
        """``publish`` of an enveloped event without properties, started at once when it can
        be written now, with no coroutine of its own: the future its confirm settles (await it
        through ``publish_failure``), or None for ``publish`` to do it (something to wait for
        first). The future is ``waiter`` when one is given (settled with ``set_result`` and
        ``set_exception``). Raises, before anything is sent, what ``publish`` would raise then."""
        ...

    def publish_failure(
        self, exc: Exception, exchange: str, routing_key: str, confirm_timeout: float | None
    ) -> Exception:
        """What ``publish`` raises when the future of ``publish_now`` failed with ``exc``."""
        ...

    async def close(self) -> None: ...


def publish_refused(exchange: str, reply_code: int, text: str) -> PublishError:
    """What every session raises for a publish the broker refused (and closed its channel for):
    one wording, with the broker's ``reply_code`` and ``text``."""
    refused = BrokerError(reply_code, f"publishing to {exchange!r}: {text}")
    return PublishError(str(refused), reply_code=reply_code)


class SessionOpener(Protocol):
    """Opens a session on the first broker (of possibly several hosts) that answers."""

    async def __call__(self, hooks: SessionHooks) -> Session: ...


class Transport(Protocol):
    """Broker I/O. Implemented for RabbitMQ (aio-pika) and by the in-memory broker.

    ``declare`` and ``consume`` are remembered: a transport that reconnects replays them.
    """

    @property
    def frame_max(self) -> int:
        """The largest frame the broker takes on this connection: a message's properties and
        headers must fit in one."""
        ...

    async def connect(self) -> None:
        """Open the connection; raise BrokerConnectionError when the broker cannot be reached."""

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues and bindings; raise BrokerError if the broker refuses."""

    async def consume(self, spec: ConsumerSpec) -> None:
        """Start delivering messages of ``spec.queue`` to ``spec.callback``."""

    async def stop_consuming(self) -> None:
        """Cancel every consumer: no new deliveries; settling those in flight still works."""

    async def message_count(self, queue: str) -> int:
        """Messages ready in ``queue``; BrokerError 404 if it does not exist."""

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        properties: OutgoingProperties | None = None,
        mandatory: bool = False,
        envelope: Envelope | None = None,
    ) -> None:
        """Publish persistently and return once the broker confirmed; raise PublishError if not."""

    @property
    def publish_timeout(self) -> float:
        """How long a publish waits for its confirm, reconnections included."""
        ...

    @property
    def open_session(self) -> Session | None:
        """The live session if it is open, to start an enveloped publish on at once
        (``Session.publish_now``) and await its confirm with no coroutine of the transport's;
        None: ``publish`` waits for one."""
        ...

    async def publish_failed(
        self,
        session: Session,
        failed: Exception,
        started: float,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        mandatory: bool,
        envelope: Envelope,
    ) -> None:
        """``session.publish_now(...)`` (started at loop time ``started`` on ``open_session``)
        or the confirm it returned failed with ``failed``: raise what ``publish`` would raise,
        or publish again once the connection is back, as ``publish`` does."""

    async def publish_batch(self, items: Sequence[PublishItem]) -> list[BaseException | None]:
        """Publish ``items`` pipelined; each one's outcome, as ``publish`` would raise it
        (None: confirmed). Cancellation goes through."""

    async def close(self) -> None:
        """Close the connection; unsettled deliveries go back to their queues."""

    def add_close_callback(self, callback: CloseCallback) -> None:
        """Call ``callback(exc)`` when the connection is lost (exc) or closed by us (None)."""
