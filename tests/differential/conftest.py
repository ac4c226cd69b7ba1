"""Fixtures of the differential suite: one RabbitMQ vhost for the whole session.

A vhost costs about two seconds of ``rabbitmqctl`` to create and delete, more than most
scenarios take. Scenarios do not share state through it: ``AmqpDriver`` deletes every queue
and exchange a scenario declared, and generated topologies use names of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amqp_events.testing import BrokerHandle
from amqp_events.testing._plugin import fresh_vhost


@pytest.fixture(scope="session")
def differential_url(amqp_events_rabbitmq_broker: BrokerHandle) -> Iterator[str]:
    """AMQP URL of a vhost made for this suite, deleted at the end of the session."""
    with fresh_vhost(amqp_events_rabbitmq_broker) as vhost:
        yield amqp_events_rabbitmq_broker.vhost_url(vhost)
