from __future__ import annotations

from collections.abc import Iterator

import pytest

from amqp_events import MemoryBroker


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a contract test on a fresh in-memory broker and on a fresh RabbitMQ vhost."""
    if request.param == "memory":
        broker = MemoryBroker()
        yield broker.url
        broker.reset()
    else:
        yield request.getfixturevalue("rabbitmq_vhost_url")
