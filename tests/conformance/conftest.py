"""The ``broker`` fixture: like ``amqp_events_broker_url``, with the broker itself at hand.

Most conformance tests only need a URL and use ``amqp_events_broker_url`` (amqp_events.testing).
The few that must act on the broker (cut every connection, look at the redelivered flag of a
message waiting in a queue) use ``broker`` instead: the same two backends, a fresh
``MemoryBroker`` or a fresh RabbitMQ vhost, as a ``tests.helpers.BrokerUnderTest``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amqp_events import MemoryBroker
from tests.helpers import BrokerUnderTest


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """A fresh in-memory broker, or a fresh vhost on RabbitMQ.

    Override the params with ``@pytest.mark.parametrize("broker", [...], indirect=True)`` to
    mark the RabbitMQ case ``disruptive``.
    """
    if request.param == "memory":
        memory = MemoryBroker()
        yield BrokerUnderTest(memory.url)
        memory.reset()
    else:
        url = request.getfixturevalue("amqp_events_rabbitmq_vhost_url")
        yield BrokerUnderTest(url, request.getfixturevalue("amqp_events_rabbitmq_admin"))
