"""Testing helpers of amqp-events.

- ``run_until_idle`` and ``capture``: publish, run services until every queue they consume is
  empty and every handler returned, and get back what was handled, dead-lettered and published
  (an ``Outcome``), without sleeps.
- The pytest plugin (``amqp_events.testing._plugin``, loaded automatically) provides the
  fixtures ``memory_broker``, ``broker_url`` (runs a test on the in-memory broker and on
  RabbitMQ), ``connection_factory``, ``amqp_url``, ``rabbitmq_broker``, ``rabbitmq_vhost``,
  ``rabbitmq_vhost_url`` and ``rabbitmq_admin``, and the markers ``rabbitmq`` and
  ``disruptive``.
- Without pytest: ``find_broker`` and ``BrokerHandle`` find a RabbitMQ (``AMQP_URL``, a local
  one, else a testcontainers container); ``VhostAdmin`` makes and deletes vhosts.
"""

from ._broker import (
    DEFAULT_AMQP_URL,
    DEFAULT_CONTAINER_IMAGE,
    ENV_AMQP_URL,
    ENV_CONTAINER_IMAGE,
    ENV_MANAGEMENT_URL,
    VHOST_PREFIX,
    BindingInfo,
    BrokerHandle,
    BrokerNotFoundError,
    ContainerRabbitmqctlAdmin,
    ManagementApiAdmin,
    QueueInfo,
    RabbitmqctlAdmin,
    VhostAdmin,
    VhostAdminError,
    VhostView,
    broker_answers,
    choose_vhost_admin,
    find_broker,
    new_vhost_name,
    redact,
    url_with_vhost,
)
from ._burst import (
    ConnectionFactory,
    DeadLettered,
    Handled,
    Outcome,
    Published,
    capture,
    run_until_idle,
)

__all__ = [
    "DEFAULT_AMQP_URL",
    "DEFAULT_CONTAINER_IMAGE",
    "ENV_AMQP_URL",
    "ENV_CONTAINER_IMAGE",
    "ENV_MANAGEMENT_URL",
    "VHOST_PREFIX",
    "BindingInfo",
    "BrokerHandle",
    "BrokerNotFoundError",
    "ConnectionFactory",
    "ContainerRabbitmqctlAdmin",
    "DeadLettered",
    "Handled",
    "ManagementApiAdmin",
    "Outcome",
    "Published",
    "QueueInfo",
    "RabbitmqctlAdmin",
    "VhostAdmin",
    "VhostAdminError",
    "VhostView",
    "broker_answers",
    "capture",
    "choose_vhost_admin",
    "find_broker",
    "new_vhost_name",
    "redact",
    "run_until_idle",
    "url_with_vhost",
]
