"""The command line's own broker connection (aio-pika, one-off), and ``amqp-events check``.

``check`` never creates anything: each exchange and queue is first declared passively (does it
exist?), and only one that exists is declared again with the service's exact settings, which
RabbitMQ answers with PRECONDITION_FAILED naming the first argument that differs, as the
service's own start would. Bindings cannot be listed over AMQP (that needs the management
plugin), so they are not checked; the service declares them again at every start anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from .._errors import AmqpEventsError
from .._topology import ExchangeSpec, QueueSpec
from .._url import check_urls, redact
from ._errors import EXIT_BROKER, EXIT_USAGE, CliError
from ._service import ServiceModel

__all__ = ["CheckResult", "broker_url", "check_service", "open_broker"]

CONNECT_TIMEOUT = 10.0


def broker_url(url: str | None, command: str) -> str:
    """The broker URL of a broker command: checked, one host, RabbitMQ only."""
    if not url:
        raise CliError(f"{command}: no broker: pass --url amqp://user:password@host/vhost")
    try:
        urls = check_urls(url)
    except AmqpEventsError as exc:
        raise CliError(f"--url: {exc}") from None
    if urls[0].startswith("memory:"):
        raise CliError(
            f"{command}: {url!r} is an in-memory broker, which lives inside one process; "
            "this command needs a RabbitMQ URL (amqp:// or amqps://)",
            EXIT_USAGE,
        )
    return urls[0]


@asynccontextmanager
async def open_broker(url: str) -> AsyncIterator[AbstractConnection]:
    """A connection of the tool's own, closed on exit; an unreachable broker is a CliError."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            connection = await aio_pika.connect(
                url, client_properties={"connection_name": "amqp-events-cli"}
            )
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        detail = str(exc) or type(exc).__name__
        raise CliError(f"cannot reach the broker at {redact(url)}: {detail}", EXIT_BROKER) from None
    try:
        yield connection
    finally:
        await connection.close()


def server_version(connection: AbstractConnection) -> str:
    try:
        properties: dict[str, Any] = connection.transport.connection.server_properties  # type: ignore[union-attr]
        product = properties.get("product", "broker")
        version = properties.get("version", "?")
        if isinstance(product, bytes):
            product = product.decode()
        if isinstance(version, bytes):
            version = version.decode()
        return f"{product} {version}"
    except Exception:
        return "broker"


@dataclass(frozen=True, slots=True)
class CheckResult:
    service: str
    kind: str  # exchange, queue, bindings
    name: str
    status: str  # ok, missing, mismatch, skipped
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")


class _Channels:
    """One channel at a time: a 404 or a 406 closes it, and the next check opens another."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None

    async def get(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


def _reply_text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


async def check_service(connection: AbstractConnection, model: ServiceModel) -> list[CheckResult]:
    channels = _Channels(connection)
    results: list[CheckResult] = []
    try:
        for exchange in model.topology.exchanges:
            results.append(await _check_exchange(channels, model.name, exchange))
        for queue in model.topology.queues:
            if queue.exclusive or queue.name in model.transient_queues:
                results.append(
                    CheckResult(
                        model.name,
                        "queue",
                        queue.name,
                        "skipped",
                        "exclusive to the running service's connection",
                    )
                )
                continue
            results.append(await _check_queue(channels, model.name, queue))
    finally:
        await channels.close()
    if model.topology.bindings:
        results.append(
            CheckResult(
                model.name,
                "bindings",
                f"{len(model.topology.bindings)} binding(s)",
                "skipped",
                "AMQP cannot list bindings; the service declares them at start",
            )
        )
    return results


async def _check_exchange(channels: _Channels, service: str, spec: ExchangeSpec) -> CheckResult:
    try:
        await (await channels.get()).declare_exchange(spec.name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return CheckResult(service, "exchange", spec.name, "missing", f"no exchange {spec.name!r}")
    try:
        await (await channels.get()).declare_exchange(
            spec.name,
            spec.type,
            durable=spec.durable,
            auto_delete=spec.auto_delete,
            internal=spec.internal,
            arguments=dict(spec.arguments),
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        return CheckResult(service, "exchange", spec.name, "mismatch", _reply_text(exc))
    return CheckResult(service, "exchange", spec.name, "ok", spec.type)


async def _check_queue(channels: _Channels, service: str, spec: QueueSpec) -> CheckResult:
    try:
        declared = await (await channels.get()).declare_queue(spec.name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return CheckResult(service, "queue", spec.name, "missing", f"no queue {spec.name!r}")
    except aiormq.exceptions.ChannelLockedResource as exc:
        return CheckResult(service, "queue", spec.name, "mismatch", _reply_text(exc))
    try:
        await (await channels.get()).declare_queue(
            spec.name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=dict(spec.arguments),
        )
    except (
        aiormq.exceptions.ChannelPreconditionFailed,
        aiormq.exceptions.ChannelLockedResource,
    ) as exc:
        return CheckResult(service, "queue", spec.name, "mismatch", _reply_text(exc))
    result = declared.declaration_result
    return CheckResult(
        service,
        "queue",
        spec.name,
        "ok",
        f"{result.message_count} message(s), {result.consumer_count} consumer(s)",
    )
