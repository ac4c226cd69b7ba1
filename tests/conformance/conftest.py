"""The ``broker`` fixture: like ``amqp_events_broker_url``, with the broker itself at hand.

Most conformance tests only need a URL and use ``amqp_events_broker_url`` (amqp_events.testing). The
few that must act on the broker (cut every connection, look at the redelivered flag of a
message waiting in a queue) use ``broker`` instead: the same two backends, a fresh
``MemoryBroker`` or a fresh RabbitMQ vhost.
"""

from __future__ import annotations

from collections.abc import Iterator

import aio_pika
import pytest

from amqp_events import MemoryBroker
from tests import broker_control


class BrokerUnderTest:
    """A broker a test can act on, whichever of the two backends it is."""

    def __init__(self, url: str, memory: MemoryBroker | None) -> None:
        self.url = url
        self.memory = memory

    @property
    def name(self) -> str:
        return "memory" if self.memory is not None else "rabbitmq"

    async def close_all_connections(self) -> None:
        """Cut every client connection from the broker side (RabbitMQ: all vhosts)."""
        if self.memory is not None:
            self.memory.close_all_connections()
            return
        broker_control.require_rabbitmqctl()
        await broker_control.close_all_connections()

    async def head_redelivered(self, queue: str) -> bool:
        """The redelivered flag of the first ready message of ``queue``, left in place.

        Call it with no consumer on ``queue``. On RabbitMQ this takes the message with
        ``basic.get`` and requeues it; the flag it reports is the one it had before.
        """
        if self.memory is not None:
            messages = self.memory.messages(queue)
            assert messages, f"queue {queue!r} holds no ready message"
            return messages[0].redelivered
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.get_queue(queue, ensure=False)
            message = await declared.get(no_ack=False, fail=False)
            assert message is not None, f"queue {queue!r} holds no ready message"
            redelivered = bool(message.redelivered)
            await message.nack(requeue=True)
        return redelivered


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """A fresh in-memory broker, or a fresh vhost on RabbitMQ.

    Override the params with ``@pytest.mark.parametrize("broker", [...], indirect=True)`` to
    mark the RabbitMQ case ``disruptive``.
    """
    if request.param == "memory":
        memory = MemoryBroker()
        yield BrokerUnderTest(memory.url, memory)
        memory.reset()
    else:
        yield BrokerUnderTest(request.getfixturevalue("amqp_events_rabbitmq_vhost_url"), None)
