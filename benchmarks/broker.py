"""The broker side of a benchmark: a vhost of its own, queues prepared and checked with aio-pika.

Everything here is outside the timed sections. The topology is declared exactly as amqp-events
declares it (see :mod:`benchmarks.common`), so every client finds the same queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
from aio_pika.abc import AbstractChannel

from amqp_events.testing import BrokerHandle, find_broker
from amqp_events.testing._urls import url_with_vhost

from .common import EXCHANGE, PIPELINE_WINDOW, QUEUE_EXPIRES_MS, ROUTING_KEY, make_order

__all__ = ["BenchBroker", "broker_lock", "prefill"]


# Not the tests' prefix (amqp-events-test-): their clean-up must not take our vhost.
VHOST_PREFIX = "amqp-events-bench-"


@contextlib.contextmanager
def broker_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive flock(2) on ``path`` (the one ``flock(1)`` takes), if given.

    The benchmark takes it around each measurement rather than for the whole run, so that others
    sharing the broker wait seconds, not the many minutes of a full run.
    """
    if path is None:
        yield
        return
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


class BenchBroker:
    """A fresh vhost on the broker of ``url`` (default: as the tests find one), deleted on close."""

    def __init__(self, url: str | None, lock: str | None = None) -> None:
        self._handle: BrokerHandle = BrokerHandle(url) if url else _found()
        self.lock_path = lock
        self.vhost = f"{VHOST_PREFIX}{uuid.uuid4().hex[:12]}"
        self.url = url_with_vhost(self._handle.url, self.vhost)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return broker_lock(self.lock_path)

    def open(self) -> None:
        with self.lock():
            self._handle.create_vhost(self.vhost)

    def close(self) -> None:
        with self.lock():
            try:
                self._handle.delete_vhost(self.vhost)
            finally:
                self._handle.close()

    @contextlib.asynccontextmanager
    async def _channel(self, *, confirms: bool = False) -> AsyncIterator[AbstractChannel]:
        connection = await aio_pika.connect(self.url)
        async with connection:
            yield await connection.channel(publisher_confirms=confirms)

    async def prepare_queue(self, queue: str) -> None:
        """Declare the exchange and ``queue`` bound to it, as amqp-events would."""
        async with self._channel() as channel:
            await _declare(channel, queue)

    async def prefill(self, queue: str, messages: int) -> None:
        await prefill(self.url, queue, messages)

    async def depth(self, queue: str) -> int:
        """Messages ready in ``queue``."""
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` now, so its messages do not weigh on the next measurement."""
        async with self._channel() as channel:
            await channel.queue_delete(queue)


async def prefill(url: str, queue: str, messages: int) -> None:
    """``queue`` holding ``messages`` persistent orders with ids ``0 .. messages-1``."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await _declare(channel, queue)
        for first in range(0, messages, PIPELINE_WINDOW):
            window = range(first, min(first + PIPELINE_WINDOW, messages))
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            make_order(i).model_dump_json().encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            content_type="application/json",
                        ),
                        routing_key=ROUTING_KEY,
                    )
                    for i in window
                )
            )


async def _declare(channel: AbstractChannel, queue: str) -> aio_pika.abc.AbstractExchange:
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    declared = await channel.declare_queue(
        queue, durable=True, arguments={"x-expires": QUEUE_EXPIRES_MS}
    )
    await declared.bind(exchange, ROUTING_KEY)
    return exchange


def _found() -> BrokerHandle:
    handle = find_broker(require=True)
    assert handle is not None  # require=True raises instead
    return handle
