"""A consumer the broker cancels (its queue deleted) is declared and consumed again, a bounded
number of times; one that cannot be restored fails the connection loudly (``ConsumerLost``).
Reconnecting says what fails, attempt by attempt.

Stand-in sessions stand where RabbitMQ's do: ``consume`` returns a tag, ``hooks.
consumer_cancelled`` is the broker's Basic.Cancel, ``declare`` may be refused. The real
broker's side of this is tests/rabbitmq/test_deleted_queue_loop.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from amqp_events import BrokerConnectionError, BrokerError, ConsumerLost
from amqp_events._topology import ConsumerSpec, Topology
from amqp_events._transport._base import Session, SessionHooks
from amqp_events._transport._reconnecting import ReconnectingTransport
from amqp_events._transport._recovery import RESTORE_ATTEMPTS
from tests.helpers import eventually
from tests.unit.test_reconnecting_publish import StandInSession

QUEUE = "events.topic.exchange.queue.svc"


class ConsumingSession(StandInSession):
    """Consumes by handing out tags; its declarations fail while ``refusals`` is not empty."""

    def __init__(self, hooks: SessionHooks) -> None:
        super().__init__(hooks, holds=True)
        self.hooks = hooks
        self.refusals: list[BaseException] = []
        self.declared = 0
        self.consumed: list[str] = []
        self.cancel_before_returning = False  # Basic.Cancel right behind the ConsumeOk

    async def declare(self, topology: Topology) -> None:
        self.declared += 1
        if self.refusals:
            raise self.refusals.pop(0)

    async def consume(self, spec: ConsumerSpec) -> str:
        tag = f"ctag-{len(self.consumed)}"
        self.consumed.append(tag)
        if self.cancel_before_returning:
            self.cancel_before_returning = False
            self.hooks.consumer_cancelled(self, tag)  # before the caller knows the tag
        await asyncio.sleep(0)
        return tag

    def cancel_by_broker(self) -> None:
        self.hooks.consumer_cancelled(self, self.consumed[-1])


async def never_called(_delivery: object) -> None:
    raise AssertionError("no deliveries here")


class Consumer:
    """A transport over consuming stand-in sessions, and what its close listeners heard. The
    first ``failed_openings`` reopenings fail with what they hold."""

    def __init__(self) -> None:
        self.failed_openings: list[BaseException] = []
        self.sessions: list[ConsumingSession] = []
        self.heard: list[BaseException | None] = []
        self.transport = ReconnectingTransport(
            self._open,
            description="stand-in",
            publish_timeout=5,
            reconnect_timeout=None,
            max_reconnect_wait=0.01,
        )
        self.transport.add_close_callback(self.heard.append)

    async def _open(self, hooks: SessionHooks) -> Session:
        if self.sessions and self.failed_openings:
            raise self.failed_openings.pop(0)
        self.sessions.append(ConsumingSession(hooks))
        return self.sessions[-1]

    @property
    def session(self) -> ConsumingSession:
        return self.sessions[-1]

    async def start(self) -> None:
        await self.transport.connect()
        await self.transport.consume(ConsumerSpec(QUEUE, never_called, 10))


async def test_a_cancelled_consumer_is_declared_and_consumed_again_once() -> None:
    consumer = Consumer()
    await consumer.start()
    consumer.session.cancel_by_broker()
    await eventually(lambda: len(consumer.session.consumed) == 2, within=2, what="consumed again")
    await asyncio.sleep(0.05)
    assert consumer.session.declared == 1  # its queue and bindings, declared again
    assert consumer.heard == []
    assert len(consumer.sessions) == 1  # no reconnection
    await consumer.transport.close()


async def test_a_refusal_that_passes_is_retried() -> None:
    consumer = Consumer()
    await consumer.start()
    consumer.session.refusals = [BrokerError(405, "RESOURCE_LOCKED - exclusive queue in use")]
    consumer.session.cancel_by_broker()
    await eventually(lambda: len(consumer.session.consumed) == 2, within=2, what="consumed again")
    assert consumer.session.declared == 2
    assert consumer.heard == []
    await consumer.transport.close()


async def test_a_consumer_that_cannot_be_restored_fails_the_connection_loudly() -> None:
    consumer = Consumer()
    await consumer.start()
    refused = BrokerError(406, "PRECONDITION_FAILED - inequivalent arg 'x-expires'")
    consumer.session.refusals = [refused] * (RESTORE_ATTEMPTS + 5)
    consumer.session.cancel_by_broker()
    await eventually(lambda: bool(consumer.heard), within=2, what="a close listener told")
    [lost] = consumer.heard
    assert isinstance(lost, ConsumerLost)
    assert lost.queue == QUEUE
    assert lost.reply_code == 406
    assert QUEUE in str(lost)
    assert "inequivalent arg" in str(lost)
    assert "Declare the queue as this service does" in str(lost)
    await asyncio.sleep(0.05)
    assert consumer.session.declared == RESTORE_ATTEMPTS  # not retried for ever
    assert consumer.session.consumed == ["ctag-0"]
    await consumer.transport.close()


async def test_a_cancel_that_beats_the_consume_call_is_not_lost() -> None:
    """Basic.Cancel processed before ``consume`` returned its tag: restored all the same."""
    consumer = Consumer()
    await consumer.transport.connect()
    consumer.session.cancel_before_returning = True
    await consumer.transport.consume(ConsumerSpec(QUEUE, never_called, 10))
    await eventually(lambda: len(consumer.session.consumed) == 2, within=2, what="consumed again")
    assert consumer.session.declared == 1
    await consumer.transport.close()


@pytest.mark.parametrize("limit_exceeded_by", [1, 10])
async def test_cancels_of_unknown_tags_are_kept_bounded(limit_exceeded_by: int) -> None:
    consumer = Consumer()
    await consumer.start()
    for n in range(64 + limit_exceeded_by):
        consumer.transport.consumer_cancelled(consumer.session, f"unknown-{n}")
    assert len(consumer.transport._early_cancels) == 64
    assert "unknown-0" not in consumer.transport._early_cancels
    await consumer.transport.close()


async def test_every_failed_reconnection_attempt_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Consumer()
    await consumer.start()
    consumer.failed_openings = [
        BrokerConnectionError("connection refused"),
        BrokerError(406, "PRECONDITION_FAILED - inequivalent arg 'x-expires'"),
    ]
    with caplog.at_level(logging.WARNING, logger="amqp_events._transport._recovery"):
        consumer.transport.session_lost(consumer.session, BrokerConnectionError("reset"))
        await eventually(lambda: len(consumer.sessions) == 2, within=2, what="reconnected")
    failed = [r for r in caplog.records if "reconnecting failed" in r.getMessage()]
    assert len(failed) == 2
    assert failed[0].levelno == logging.WARNING
    assert "attempt 1" in failed[0].getMessage()
    assert "connection refused" in failed[0].getMessage()
    assert failed[1].levelno == logging.ERROR  # a refusal does not pass by waiting alone
    assert "refuses this service's topology" in failed[1].getMessage()
    await consumer.transport.close()
