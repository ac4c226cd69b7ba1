"""Testing helpers of amqp-events: what a service's own tests need.

- ``run_until_idle`` and ``capture``: publish, run services until every queue they consume is
  empty and every handler returned, and get back what was handled, dead-lettered and published
  (an ``Outcome`` of ``Handled``, ``DeadLettered`` and ``Published`` records), without sleeps.
- The pytest plugin (``amqp_events.testing._plugin``, loaded automatically) provides the
  fixtures, all prefixed ``amqp_events_`` so that they cannot clash with a project's own:
  ``amqp_events_memory_broker``, ``amqp_events_broker_url`` (runs a test on the in-memory
  broker and on RabbitMQ), ``amqp_events_connection_factory`` (a ``ConnectionFactory``),
  ``amqp_events_rabbitmq_url``, ``amqp_events_rabbitmq_broker`` (a ``BrokerHandle``),
  ``amqp_events_rabbitmq_vhost``, ``amqp_events_rabbitmq_vhost_url`` and
  ``amqp_events_rabbitmq_admin`` (a ``VhostView``), and the markers ``rabbitmq`` and
  ``disruptive``.
- ``QueueInfo``, ``ExchangeInfo`` and ``BindingInfo``: what a queue, an exchange and a binding
  look like, in one shape on both brokers (``MemoryBroker.queue_info`` and ``VhostView.queue``
  return equal ``QueueInfo`` for the same queue).
- ``assert_compatible(OldModel, NewModel)``: whether two versions of an event can read each
  other's messages during a rolling deploy (for a project's CI).
- Without pytest: ``find_broker`` finds a RabbitMQ (``AMQP_URL``, a local one, else a
  testcontainers container) or raises ``BrokerNotFoundError``; the ``BrokerHandle`` it returns
  makes and deletes vhosts (``VhostAdminError`` when it cannot).

The modules: ``_burst`` (run_until_idle, capture, the outcome), ``_plugin`` (the fixtures),
``_broker`` (finding a broker, starting a container, choosing a vhost admin), ``_vhost_admin``
(what a vhost admin does; ``VhostView``), ``_management_api`` and ``_rabbitmqctl`` (the two
ways to do it), ``_urls`` (broker URLs and vhost names), ``_compatibility`` (assert_compatible).
"""

from .._transport.memory._info import BindingInfo, ExchangeInfo, QueueInfo
from ._broker import BrokerHandle, BrokerNotFoundError, find_broker
from ._burst import (
    ConnectionFactory,
    DeadLettered,
    Handled,
    Outcome,
    Published,
    capture,
    run_until_idle,
)
from ._compatibility import assert_compatible
from ._vhost_admin import VhostAdminError, VhostView

__all__ = [
    "BindingInfo",
    "BrokerHandle",
    "BrokerNotFoundError",
    "ConnectionFactory",
    "DeadLettered",
    "ExchangeInfo",
    "Handled",
    "Outcome",
    "Published",
    "QueueInfo",
    "VhostAdminError",
    "VhostView",
    "assert_compatible",
    "capture",
    "find_broker",
    "run_until_idle",
]
