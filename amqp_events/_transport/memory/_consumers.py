"""Consumers of a queue: who is served next (round robin, or the single active consumer),
prefetch limits, and handing a message over in a task of its own."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..._topology import DeliveryCallback
from ._delivery import MemoryDelivery

if TYPE_CHECKING:
    from ._connection import Channel
    from ._message import Message
    from ._queues import Queue
    from ._vhost import Vhost

__all__ = ["Consumer", "attach", "deliver", "detach", "next_consumer", "settled"]


class Consumer:
    """A consumer on a queue, over a connection."""

    __slots__ = (
        "blocked",
        "callback",
        "connection",
        "exclusive",
        "prefetch",
        "queue",
        "tag",
        "unacked",
    )

    def __init__(
        self,
        tag: str,
        queue: Queue,
        connection: Channel,
        callback: DeliveryCallback,
        prefetch: int,
        exclusive: bool,
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.connection = connection
        self.callback = callback
        self.prefetch = prefetch
        self.exclusive = exclusive
        self.unacked = 0
        # Found at its prefetch limit when its turn came: out of the queue's round robin
        # until a settlement makes room, then back at its tail (RabbitMQ's blocked consumers).
        self.blocked = False

    @property
    def has_room(self) -> bool:
        """Whether its prefetch allows another unsettled delivery."""
        return self.prefetch == 0 or self.unacked < self.prefetch


def attach(consumer: Consumer) -> None:
    """Add a new consumer to its queue, at the tail of the round robin."""
    q = consumer.queue
    q.consumers.append(consumer)
    q.active.append(consumer)
    q.had_consumer = True


def detach(consumer: Consumer) -> None:
    """Take a consumer off its queue: no more deliveries."""
    q = consumer.queue
    q.consumers.remove(consumer)
    if consumer.blocked:
        consumer.blocked = False
    else:
        q.active.remove(consumer)


def next_consumer(q: Queue) -> Consumer | None:
    """The consumer to serve next, moved to the tail of the round robin; None if every
    consumer is at its prefetch limit.

    As RabbitMQ's classic queues: a consumer found at its limit when its turn comes leaves
    the round robin (blocked), and rejoins it at the tail when a settlement makes room,
    so it does not get the next message ahead of those that kept their turn. With
    ``x-single-active-consumer``, the earliest consumer still there is the only one served.
    """
    if q.single_active:
        holder = q.consumers[0] if q.consumers else None
        return holder if holder is not None and holder.has_room else None
    active = q.active
    while active:
        consumer = active.popleft()
        if consumer.has_room:
            active.append(consumer)
            return consumer
        consumer.blocked = True
    return None


def settled(consumer: Consumer) -> None:
    """Count one of its deliveries settled; a blocked consumer with room rejoins the round
    robin at its tail. (Only a consumer still on its queue is blocked: ``detach`` clears it.)"""
    consumer.unacked -= 1
    if consumer.blocked and consumer.has_room:
        consumer.blocked = False
        consumer.queue.active.append(consumer)


def deliver(
    vhost: Vhost,
    loop: asyncio.AbstractEventLoop,
    q: Queue,
    consumer: Consumer,
    message: Message,
) -> None:
    """Hand ``message`` to ``consumer``: unsettled on its connection, its callback a task."""
    conn = consumer.connection
    tag = conn.add_delivery(q, message, consumer)
    consumer.unacked += 1
    q.unacked += 1
    delivery = MemoryDelivery(conn, tag, message)
    # Its own task, as aiormq does: a callback never runs inside publish or ack.
    task = asyncio.ensure_future(consumer.callback(delivery), loop=loop)
    vhost.track(task)
