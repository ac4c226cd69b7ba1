"""``Publisher.publish`` on an open session: the message is written at once and the result is
the future of its confirm (``PendingPublish``), which awaits, gathers and becomes a task as the
coroutine it stands for does, and takes ``publish``'s path when the session fails it."""

from __future__ import annotations

import asyncio
import collections.abc
import logging

import pytest

from amqp_events import PublishError, PublishOutcomeUnknown, Unroutable
from amqp_events._pending_publish import PendingPublish
from amqp_events._transport._reconnecting import ReconnectingTransport
from tests.unit.test_reconnecting_publish import Note, StandInBroker, publisher_on, started


async def confirming() -> tuple[StandInBroker, ReconnectingTransport]:
    """A transport whose first session holds every publish until the test settles it."""
    broker = StandInBroker()
    return broker, await started(broker, publish_timeout=5)


async def test_a_publish_on_an_open_session_is_written_at_once_as_a_future() -> None:
    broker, transport = await confirming()
    pending = publisher_on(transport).publish(Note())
    assert isinstance(pending, PendingPublish)
    assert asyncio.isfuture(pending)
    assert isinstance(pending, collections.abc.Coroutine)
    assert broker.sessions[0].sent == 1  # before anything awaited it
    broker.sessions[0].in_flight[0].set_result(None)
    assert await pending is None
    await transport.close()


@pytest.mark.parametrize("how", ["await", "gather", "create_task", "task_group", "wait_for"])
async def test_it_is_used_as_the_coroutine_it_stands_for(how: str) -> None:
    broker, transport = await confirming()
    publisher = publisher_on(transport)

    async def confirm_soon() -> None:
        await asyncio.sleep(0.01)
        for confirm in broker.sessions[0].in_flight:
            if not confirm.done():
                confirm.set_result(None)

    confirming_task = asyncio.create_task(confirm_soon())
    if how == "await":
        await publisher.publish(Note())
    elif how == "gather":
        assert await asyncio.gather(*(publisher.publish(Note()) for _ in range(3))) == [None] * 3
    elif how == "create_task":
        task = asyncio.create_task(publisher.publish(Note()))
        await task
        assert task.done()
        assert task.exception() is None
    elif how == "task_group":
        async with asyncio.TaskGroup() as group:
            in_group = group.create_task(publisher.publish(Note()))
        assert in_group.exception() is None
    else:
        await asyncio.wait_for(publisher.publish(Note()), 1.0)
    await confirming_task
    await transport.close()


async def test_a_task_made_of_it_fails_as_the_publish_does() -> None:
    broker = StandInBroker()
    transport = await started(broker, publish_timeout=0.2)
    task = asyncio.create_task(publisher_on(transport).publish(Note()))
    await asyncio.sleep(0)
    broker.down = True
    broker.sessions[0].cut()  # lost in flight, and no connection comes back in time
    with pytest.raises(PublishOutcomeUnknown, match="not confirmed within 0.2s"):
        await asyncio.wait_for(task, 2.0)
    await transport.close()


async def test_a_cancelled_task_cancels_its_publish_wait() -> None:
    broker, transport = await confirming()
    pending = publisher_on(transport).publish(Note())
    assert isinstance(pending, PendingPublish)
    task = asyncio.create_task(pending)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pending.cancelled()
    # The session's confirm finds it done and leaves it (as the lean channel does).
    assert broker.sessions[0].in_flight == [pending]
    await transport.close()


async def test_a_return_fails_it_as_unroutable_through_the_destination() -> None:
    broker, transport = await confirming()
    pending = publisher_on(transport).publish(Note(), mandatory=True)
    broker.sessions[0].in_flight[0].set_exception(Unroutable("no queue bound"))
    with pytest.raises(Unroutable, match="no queue bound"):
        await asyncio.wait_for(pending, 2.0)
    await transport.close()


async def test_a_refusal_fails_it_with_the_sessions_error() -> None:
    broker, transport = await confirming()
    pending = publisher_on(transport).publish(Note())
    broker.sessions[0].in_flight[0].set_exception(PublishError("broker refused: basic.nack"))
    with pytest.raises(PublishError, match="basic.nack"):
        await asyncio.wait_for(pending, 2.0)
    await transport.close()


async def test_cancelling_it_while_it_is_published_again_stops_that() -> None:
    broker, transport = await confirming()
    broker.down = True  # the reconnection waits, and so does the publish again
    pending = publisher_on(transport).publish(Note())
    assert isinstance(pending, PendingPublish)
    broker.sessions[0].cut()
    await asyncio.sleep(0.05)
    assert not pending.done()
    pending.cancel()
    await asyncio.sleep(0.05)
    assert pending.cancelled()
    broker.down = False
    await transport.close()


async def test_without_an_open_session_it_is_the_coroutine() -> None:
    broker, transport = await confirming()
    broker.sessions[0].open = False
    publishing = publisher_on(transport).publish(Note())
    assert not isinstance(publishing, PendingPublish)
    publishing.close()  # never awaited: nothing was written
    assert broker.sessions[0].sent == 0
    await transport.close()


async def test_with_debug_logging_it_is_the_coroutine(caplog: pytest.LogCaptureFixture) -> None:
    broker, transport = await confirming()
    with caplog.at_level(logging.DEBUG, logger="amqp_events._publisher"):
        publishing = publisher_on(transport).publish(Note())
        assert not isinstance(publishing, PendingPublish)
        task = asyncio.create_task(publishing)
        await broker.sessions[0].holding.wait()
        broker.sessions[0].in_flight[0].set_result(None)
        await task
    assert "published 'Note'" in caplog.text
    await transport.close()
