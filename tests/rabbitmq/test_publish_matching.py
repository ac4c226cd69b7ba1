"""Each publish gets its own outcome, even when concurrent publishes share a message_id.

aiormq matches a basic.return to its publish by message_id. Our retry and dead-letter moves keep
the original's id, so two moves of one id in flight at once on one channel could swap outcomes:
an unroutable move reported confirmed, its original then acked, the message lost.
"""

from __future__ import annotations

import asyncio

import pytest

from amqp_events import PublishError, Unroutable
from amqp_events._topology import QueueSpec, Topology
from amqp_events._transport._amqp import AmqpSession
from amqp_events._transport._amqp_opener import AmqpOpener
from amqp_events._transport._base import OutgoingProperties, Session

pytestmark = pytest.mark.rabbitmq


class _Hooks:
    def session_lost(self, session: Session, exc: BaseException) -> None:
        pass

    def consumer_cancelled(self, session: Session, consumer_tag: str) -> None:
        pass


async def _open(url: str) -> AmqpSession:
    opener = AmqpOpener([url], connection_name="publish-matching", connect_timeout=10.0)
    return await opener(_Hooks())


async def _outcome(session: AmqpSession, routing_key: str, message_id: str) -> str:
    try:
        await session.publish(
            "",
            routing_key,
            b"{}",
            {"service": "matching"},
            properties=OutgoingProperties(message_id=message_id),
            mandatory=True,
            confirm_timeout=10.0,
        )
    except Unroutable:
        return "unroutable"
    except PublishError as exc:
        return f"error: {exc}"
    return "confirmed"


async def test_concurrent_mandatory_publishes_sharing_a_message_id_get_their_own_outcome(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    session = await _open(amqp_events_rabbitmq_vhost_url)
    try:
        queue = QueueSpec("matching-q", False, False, False, {})
        await session.declare(Topology(queues=[queue]))
        targets = ["matching-q" if i % 3 else "no-such-queue" for i in range(90)]
        outcomes = await asyncio.gather(*(_outcome(session, t, "same-id") for t in targets))
        expected = ["confirmed" if t == "matching-q" else "unroutable" for t in targets]
        assert outcomes == expected
        assert await session.message_count("matching-q") == targets.count("matching-q")
    finally:
        await session.close()


async def test_publishes_with_distinct_ids_still_pipeline(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    session = await _open(amqp_events_rabbitmq_vhost_url)
    try:
        queue = QueueSpec("matching-q2", False, False, False, {})
        await session.declare(Topology(queues=[queue]))
        targets = ["matching-q2" if i % 2 else "no-such-queue" for i in range(40)]
        outcomes = await asyncio.gather(
            *(_outcome(session, t, f"id-{i % 4}") for i, t in enumerate(targets))
        )
        assert outcomes == ["confirmed" if i % 2 else "unroutable" for i in range(40)]
        assert not session._waiting_ids  # emptied as publishes finish: bounded
    finally:
        await session.close()
