"""Consumers of a queue: who is served next (round robin, or the single active consumer),
prefetch limits, and handing a message over in a task of its own. A queue keeps its consumers
in a ``Consumers``, which alone changes them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..._topology import DeliveryCallback
from ._delivery import MemoryDelivery

if TYPE_CHECKING:
    from ._connection import Channel
    from ._message import Message
    from ._queues import Queue
    from ._vhost import Vhost

__all__ = ["Consumer", "Consumers", "deliver"]


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
        # Found at its prefetch limit when its turn came: out of its queue's round robin
        # until a settlement makes room, then back at its tail (see Consumers).
        self.blocked = False

    @property
    def has_room(self) -> bool:
        """Whether its prefetch allows another unsettled delivery."""
        return self.prefetch == 0 or self.unacked < self.prefetch


class Consumers:
    """The consumers of one queue, in the order they started, and its round robin: the head
    is served next and goes to the tail once served.

    As RabbitMQ's classic queues: a consumer found at its prefetch limit when its turn comes
    leaves the round robin (blocked), and rejoins it at the tail when a settlement makes room,
    so it does not get the next message ahead of those that kept their turn. With
    ``x-single-active-consumer`` (``single_active``), the earliest consumer still there is the
    only one served.
    """

    __slots__ = ("_active", "_all", "had_any", "single_active")

    def __init__(self, *, single_active: bool) -> None:
        self.single_active = single_active
        self._all: list[Consumer] = []
        self._active: deque[Consumer] = deque()
        self.had_any = False  # for auto-delete: a queue goes with its last consumer only

    def __len__(self) -> int:
        return len(self._all)

    def __bool__(self) -> bool:
        return bool(self._all)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(self._all)

    def add(self, consumer: Consumer) -> None:
        """A new consumer, at the tail of the round robin."""
        self._all.append(consumer)
        self._active.append(consumer)
        self.had_any = True

    def remove(self, consumer: Consumer) -> None:
        """Take ``consumer`` off: no more deliveries to it."""
        self._all.remove(consumer)
        if consumer.blocked:
            consumer.blocked = False
        else:
            self._active.remove(consumer)

    def clear(self) -> list[Consumer]:
        """Take every consumer off (the queue was deleted); return them."""
        consumers, self._all = self._all, []
        for consumer in consumers:
            consumer.blocked = False
        self._active.clear()
        return consumers

    def next(self) -> Consumer | None:
        """The consumer to serve next, moved to the tail of the round robin; None if every
        consumer is at its prefetch limit."""
        if self.single_active:
            holder = self._all[0] if self._all else None
            return holder if holder is not None and holder.has_room else None
        active = self._active
        while active:
            consumer = active.popleft()
            if consumer.has_room:
                active.append(consumer)
                return consumer
            consumer.blocked = True
        return None

    def settled(self, consumer: Consumer) -> None:
        """Count one of ``consumer``'s deliveries settled; blocked with room, it rejoins the
        round robin at its tail. (Only a consumer still here is blocked: ``remove`` and
        ``clear`` unblock it.)"""
        consumer.unacked -= 1
        if consumer.blocked and consumer.has_room:
            consumer.blocked = False
            self._active.append(consumer)


def deliver(
    vhost: Vhost,
    loop: asyncio.AbstractEventLoop,
    q: Queue,
    consumer: Consumer,
    message: Message,
) -> None:
    """Hand ``message`` from ``q`` to ``consumer``: unsettled on its connection, its callback
    a task."""
    conn = consumer.connection
    tag = conn.add_delivery(q, message, consumer)
    consumer.unacked += 1
    delivery = MemoryDelivery(conn, tag, message)
    # Its own task, as aiormq does: a callback never runs inside publish or ack.
    task = asyncio.ensure_future(consumer.callback(delivery), loop=loop)
    vhost.track(task)
