"""An in-process AMQP 0-9-1 broker that follows RabbitMQ 3.10's rules.

``MemoryBroker`` keeps exchanges, queues, bindings, consumers and messages in memory and applies
RabbitMQ's semantics to them: default/direct/topic/fanout/headers routing (with ``CC``/``BCC``
sender-selected keys and alternate exchanges), prefetch, round-robin delivery (a consumer at its
prefetch limit rejoins at the tail) and single active consumers, requeue at the original
position with the redelivered flag, message and queue TTLs, dead-lettering with ``x-death``,
``x-max-length`` and ``x-max-length-bytes`` overflow, exclusive and auto-delete queues, quorum
queues' differences (requeue to the back, ``x-delivery-count``, ``x-delivery-limit``), and the
channel errors (404, 403, 405, 406) RabbitMQ answers with, in its words. The memory transport
(``_session``) runs a service unchanged against ``memory://`` over it. On virtual time (for
tests) its clock jumps to the next message expiry whenever it is idle.

Everything runs on one event loop and one thread; broker methods are synchronous and consumer
callbacks run in their own tasks, as with aiormq.

The modules, one job each:

- ``_broker``: ``MemoryBroker``, the public face of the rest, and ``broker_for_url``;
- ``_vhost``: exchanges, queues and connections of a broker, and declare/bind/delete on them;
- ``_connection``: ``MemoryConnection`` and its ``Channel`` (consume, cancel, ack, reject, close);
- ``_publishing``: checking, routing and storing a published message;
- ``_registry``: brokers by name, ``memory://`` URLs; ``_session``: the memory transport;
- ``_exchanges``: exchanges and routing; ``_queues``: queues, TTL, ``x-expires``, requeue;
- ``_limits``: ``x-max-length``, ``x-max-length-bytes`` and ``x-overflow``;
- ``_consumers``: a queue's consumers, round robin, prefetch, handing over;
- ``_delivery``: the ``Delivery``;
- ``_activity``: consumer callbacks in flight and waiting until idle;
- ``_clock``: the time TTLs read, real or virtual (jumping ahead while the broker is idle);
- ``_dead_letters``: dead-lettering and ``x-death``; ``_message``: a stored message;
- ``_content``: headers as pamqp and RabbitMQ carry them, frame_max and max_message_size;
- ``_arguments``: argument validation and equivalence; ``_refusals``: RabbitMQ's refusals;
- ``_info``: the public snapshots (``QueueInfo``, ``ExchangeInfo``, ``BindingInfo``,
  ``MessageSnapshot``, ``MessageProperties``).
"""

from ._broker import MemoryBroker, broker_for_url
from ._connection import MemoryConnection
from ._info import BindingInfo, ExchangeInfo, MessageProperties, MessageSnapshot, QueueInfo
from ._registry import DEFAULT_BROKER_NAME

__all__ = [
    "DEFAULT_BROKER_NAME",
    "BindingInfo",
    "ExchangeInfo",
    "MemoryBroker",
    "MemoryConnection",
    "MessageProperties",
    "MessageSnapshot",
    "QueueInfo",
    "broker_for_url",
]
