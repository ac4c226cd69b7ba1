"""Testing helpers of amqp-events: a real RabbitMQ and a vhost of its own for each test.

Without pytest, use :func:`find_broker` and :class:`BrokerHandle` directly. With pytest, the
plugin ``amqp_events.testing._plugin`` (loaded automatically) provides the fixtures
``rabbitmq_broker``, ``amqp_url``, ``rabbitmq_vhost``, ``rabbitmq_vhost_url`` and
``rabbitmq_admin``, and the markers ``rabbitmq`` and ``disruptive``.
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
    "ContainerRabbitmqctlAdmin",
    "ManagementApiAdmin",
    "QueueInfo",
    "RabbitmqctlAdmin",
    "VhostAdmin",
    "VhostAdminError",
    "VhostView",
    "broker_answers",
    "choose_vhost_admin",
    "find_broker",
    "new_vhost_name",
    "redact",
    "url_with_vhost",
]
