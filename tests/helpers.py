"""Test helpers that wait on events, never on fixed sleeps, and reach past the library to the
broker (raw publishes as a goamqp service would send them, queue depths)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import aio_pika
import pamqp.encode

from amqp_events._transport.memory import broker_for_url

T = TypeVar("T")


class Collector(Generic[T]):
    """Collects what handlers saw; ``wait(n)`` returns once ``n`` items arrived."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait(self, count: int, within: float = 10.0) -> list[T]:
        async with asyncio.timeout(within):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.items)

    async def settle(self, quiet: float = 0.2) -> None:
        """Wait until nothing new arrived for ``quiet`` seconds: for asserting that no more came."""
        while True:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), quiet)
            except TimeoutError:
                return


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, what: str = ""
) -> None:
    """Wait until ``check()`` holds. Only for broker-side state that no event announces (a
    consumer restored after its queue was deleted); everything else waits on events."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


@contextlib.contextmanager
def raw_string_bytes() -> Iterator[None]:
    """Let pamqp write a ``bytes`` header value as an AMQP long string of those very bytes, as
    a client in another language may send one that is not valid UTF-8."""
    original = pamqp.encode.encode_table_value

    def encode(value: Any) -> bytes:
        if isinstance(value, bytes):
            return b"S" + len(value).to_bytes(4, "big") + value
        return original(value)

    pamqp.encode.encode_table_value = encode
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = original


async def raw_publish(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None = None,
) -> None:
    """Publish bypassing amqp-events, as another client (e.g. goamqp) would. A ``bytes``
    header value goes out as a string of those bytes (see ``raw_string_bytes``)."""
    if url.startswith("memory:"):
        broker_for_url(url).publish(
            exchange,
            routing_key,
            body,
            dict(headers),
            content_type="application/json",
            message_id=message_id,
        )
        return
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        with raw_string_bytes():
            await target.publish(
                aio_pika.Message(
                    body,
                    headers=dict(headers),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message_id,
                ),
                routing_key,
            )


async def delete_exchange(url: str, exchange: str) -> None:
    """Delete ``exchange`` as an operator would, with every binding from it."""
    if url.startswith("memory:"):
        broker_for_url(url).delete_exchange(exchange)
        return
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(exchange)


async def delete_queue(url: str, queue: str) -> None:
    """Delete ``queue`` as an operator would, messages and all."""
    if url.startswith("memory:"):
        broker_for_url(url).delete_queue(queue)
        return
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


async def queue_depth(url: str, queue: str) -> int:
    """Ready messages in ``queue``; call it with no consumer attached."""
    if url.startswith("memory:"):
        return broker_for_url(url).queue_info(queue).messages
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.message_count is not None
        return declared.declaration_result.message_count


async def drain(url: str, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Take every ready message out of ``queue``: (body, headers) pairs, in order."""
    taken: list[tuple[bytes, dict[str, Any]]] = []
    if url.startswith("memory:"):
        broker = broker_for_url(url)
        while (snapshot := broker.get(queue)) is not None:
            taken.append((snapshot.body, dict(snapshot.headers)))
        return taken
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append((message.body, dict(message.headers)))
    return taken
