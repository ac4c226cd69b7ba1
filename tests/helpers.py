"""Test helpers that wait on events, never on fixed sleeps, and reach past the library to the
broker, whichever it is (``BrokerUnderTest``: raw publishes as a goamqp service would send them,
queue depths, deletions, cut connections)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import aio_pika
import pamqp.encode
import pytest
from aio_pika.abc import AbstractChannel

from amqp_events._transport.memory import MemoryBroker, broker_for_url
from amqp_events.testing import BindingInfo, ExchangeInfo, QueueInfo, VhostView
from tests import broker_control

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


class BrokerUnderTest:
    """The broker behind a test's URL, whichever of the two it is: ``memory://`` (the
    ``MemoryBroker`` itself) or a RabbitMQ vhost (raw AMQP, ``rabbitmqctl``, and the vhost's
    ``VhostView`` when given). What a test does past the library, as an operator or another
    client would, is written once here; the functions below are shortcuts to it."""

    def __init__(self, url: str, view: VhostView | None = None) -> None:
        self.url = url
        self.memory = broker_for_url(url) if url.startswith("memory:") else None
        self.view = view

    @property
    def name(self) -> str:
        return "memory" if self.memory is not None else "rabbitmq"

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        connection = await aio_pika.connect(self.url)
        async with connection:
            yield await connection.channel()

    async def raw_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        message_id: str | None = None,
    ) -> None:
        """Publish bypassing amqp-events, as another client (e.g. goamqp) would. A ``bytes``
        header value goes out as a string of those bytes (see ``raw_string_bytes``)."""
        if self.memory is not None:
            self.memory.publish(
                exchange,
                routing_key,
                body,
                dict(headers),
                content_type="application/json",
                message_id=message_id,
            )
            return
        async with self._channel() as channel:
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

    async def delete_exchange(self, exchange: str) -> None:
        """Delete ``exchange`` as an operator would, with every binding from it."""
        if self.memory is not None:
            self.memory.delete_exchange(exchange)
            return
        async with self._channel() as channel:
            await channel.exchange_delete(exchange)

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` as an operator would, messages and all."""
        if self.memory is not None:
            self.memory.delete_queue(queue)
            return
        async with self._channel() as channel:
            await channel.queue_delete(queue)

    async def replace_queue(self, queue: str, arguments: Mapping[str, Any] | None = None) -> None:
        """Delete ``queue`` and at once declare it again, durable, with ``arguments``, as another
        client would: on one channel, back to back, before its consumer's client can react."""
        if self.memory is not None:
            self.memory.delete_queue(queue)
            self.memory.declare_queue(queue, arguments=arguments)
            return
        async with self._channel() as channel:
            await channel.queue_delete(queue)
            await channel.declare_queue(queue, durable=True, arguments=dict(arguments or {}))

    async def queue_depth(self, queue: str) -> int:
        """Ready messages in ``queue``; call it with no consumer attached."""
        if self.memory is not None:
            return self.memory.queue_info(queue).messages
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            assert declared.declaration_result.message_count is not None
            return declared.declaration_result.message_count

    async def drain(self, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
        """Take every ready message out of ``queue``: (body, headers) pairs, in order."""
        taken: list[tuple[bytes, dict[str, Any]]] = []
        if self.memory is not None:
            while (snapshot := self.memory.get(queue)) is not None:
                taken.append((snapshot.body, dict(snapshot.headers)))
            return taken
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            while (message := await declared.get(no_ack=True, fail=False)) is not None:
                taken.append((message.body, dict(message.headers)))
        return taken

    async def head_redelivered(self, queue: str) -> bool:
        """The redelivered flag of the first ready message of ``queue``, left in place.

        Call it with no consumer on ``queue``. On RabbitMQ this takes the message with
        ``basic.get`` and requeues it; the flag it reports is the one it had before.
        """
        if self.memory is not None:
            messages = self.memory.messages(queue)
            assert messages, f"queue {queue!r} holds no ready message"
            return messages[0].redelivered
        async with self._channel() as channel:
            declared = await channel.get_queue(queue, ensure=False)
            message = await declared.get(no_ack=False, fail=False)
            assert message is not None, f"queue {queue!r} holds no ready message"
            redelivered = bool(message.redelivered)
            await message.nack(requeue=True)
        return redelivered

    async def close_own_connections(self) -> None:
        """Cut the client connections of this test's broker only: on RabbitMQ those of its
        vhost (a developer's other connections stay), on memory all of its own."""
        if self.memory is not None:
            self.memory.close_all_connections()
            return
        broker_control.require_rabbitmqctl()
        closed = await broker_control.close_vhost_connections(broker_control.vhost_of(self.url))
        assert closed, f"no connection to close in vhost {broker_control.vhost_of(self.url)!r}"

    async def close_all_connections(self) -> None:
        """Cut every client connection from the broker side (RabbitMQ: all vhosts)."""
        if self.memory is not None:
            self.memory.close_all_connections()
            return
        broker_control.require_rabbitmqctl()
        await broker_control.close_all_connections()

    @classmethod
    def for_test(cls, url: str, request: pytest.FixtureRequest) -> BrokerUnderTest:
        """The broker of ``url``, a URL the test got from ``amqp_events_broker_url`` or
        ``amqp_events_rabbitmq_vhost_url``; on RabbitMQ with that vhost's ``VhostView``."""
        if url.startswith("memory:"):
            return cls(url)
        return cls(url, request.getfixturevalue("amqp_events_rabbitmq_admin"))

    async def _inspect(
        self, memory: Callable[[MemoryBroker], T], rabbitmq: Callable[[VhostView], T]
    ) -> T:
        if self.memory is not None:
            return memory(self.memory)
        assert self.view is not None, "a RabbitMQ BrokerUnderTest needs its vhost's VhostView"
        # The view blocks: keep the loop, and connections the test holds, alive meanwhile.
        return await asyncio.to_thread(rabbitmq, self.view)

    async def queue_info(self, queue: str) -> QueueInfo:
        """``queue`` as the broker reports it, in the shape both brokers share."""
        return await self._inspect(lambda m: m.queue_info(queue), lambda v: v.queue(queue))

    async def exchange_info(self, exchange: str) -> ExchangeInfo:
        """``exchange`` as the broker reports it, in the shape both brokers share."""
        return await self._inspect(
            lambda m: m.exchange_info(exchange), lambda v: v.exchange(exchange)
        )

    async def bindings(self, queue: str) -> list[BindingInfo]:
        """The explicit bindings of ``queue``, sorted, in the shape both brokers share."""
        found = await self._inspect(lambda m: m.bindings(queue), lambda v: v.bindings(queue))
        return sorted(found, key=lambda b: (b.exchange, b.routing_key))


async def raw_publish(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None = None,
) -> None:
    """``BrokerUnderTest(url).raw_publish(...)``."""
    await BrokerUnderTest(url).raw_publish(
        exchange, routing_key, body, headers, message_id=message_id
    )


async def delete_exchange(url: str, exchange: str) -> None:
    """``BrokerUnderTest(url).delete_exchange(exchange)``."""
    await BrokerUnderTest(url).delete_exchange(exchange)


async def delete_queue(url: str, queue: str) -> None:
    """``BrokerUnderTest(url).delete_queue(queue)``."""
    await BrokerUnderTest(url).delete_queue(queue)


async def replace_queue(url: str, queue: str, arguments: Mapping[str, Any] | None = None) -> None:
    """``BrokerUnderTest(url).replace_queue(queue, arguments)``."""
    await BrokerUnderTest(url).replace_queue(queue, arguments)


async def queue_depth(url: str, queue: str) -> int:
    """``BrokerUnderTest(url).queue_depth(queue)``."""
    return await BrokerUnderTest(url).queue_depth(queue)


async def drain(url: str, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    """``BrokerUnderTest(url).drain(queue)``."""
    return await BrokerUnderTest(url).drain(queue)


ENVELOPE_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "datacontenttype")


def goamqp_part(headers: Mapping[str, Any], *, source: str, type: str) -> dict[str, Any]:
    """The headers without our CloudEvents envelope, after checking the envelope is whole:
    what a goamqp service sees and relies on."""
    for attribute in ENVELOPE_ATTRIBUTES:
        assert f"cloudEvents:{attribute}" in headers, f"no cloudEvents:{attribute} in {headers}"
    assert headers["cloudEvents:source"] == source
    assert headers["cloudEvents:type"] == type
    assert isinstance(headers.get("cloudEvents:correlationid"), str)
    return {k: v for k, v in headers.items() if not k.startswith("cloudEvents:")}
