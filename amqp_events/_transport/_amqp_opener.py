"""Opening a session on RabbitMQ: the first of several hosts that answers, and why none did."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aio_pika
import aiormq

from .._errors import BrokerConnectionError
from .._naming import HEARTBEAT_SECONDS
from .._url import redact
from ._amqp import AmqpSession
from ._base import SessionHooks
from ._lean_link import LeanLink, LeanTransportFactory

__all__ = ["AmqpOpener"]


class AmqpOpener:
    """Opens a session on the first of ``urls`` that answers (multi-host failover)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        connection_name: str,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._urls = list(urls)
        self._connection_name = connection_name
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"AmqpOpener({[redact(u) for u in self._urls]!r})"

    async def __call__(self, hooks: SessionHooks) -> AmqpSession:
        failures = []
        for url in self._urls:
            try:
                return await self._open(url, hooks)
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                failures.append(f"{redact(url)}: {_why_not_open(url, exc)}")
        raise BrokerConnectionError("cannot connect: " + "; ".join(failures))

    async def _open(self, url: str, hooks: SessionHooks) -> AmqpSession:
        options: dict[str, Any] = {}
        if "heartbeat" not in dict(parse_qsl(urlsplit(url).query)):
            options["heartbeat"] = HEARTBEAT_SECONDS
        if self._ssl_context is not None:
            options["ssl_context"] = self._ssl_context
        link = LeanLink()

        class _LeanConnection(aio_pika.Connection):
            # aio-pika passes only the parameters it knows on to aiormq: the transport of the
            # hot path (aiormq's own hook) is set here.
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.kwargs["transport_factory"] = LeanTransportFactory(link)

        connection = await aio_pika.connect(
            url,
            timeout=self._connect_timeout,
            client_properties={"connection_name": self._connection_name},
            connection_class=_LeanConnection,
            **options,
        )
        session = AmqpSession(connection, url, hooks, link)
        try:
            await session.open_channels()
        except BaseException:
            await connection.close()
            raise
        return session


def _why_not_open(url: str, exc: BaseException) -> str:
    """Why connecting to ``url`` failed, in words; aiormq's own text where it is clear."""
    text = str(exc)
    # RabbitMQ answers Connection.Open with Connection.Close (530 NOT_ALLOWED) for a vhost that
    # does not exist or that the user may not access; aiormq reports only the unexpected frame.
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "OpenOk" in text:
        parts = urlsplit(url)
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        user = unquote(parts.username or "guest")
        return (
            f"virtual host {vhost!r} does not exist (or user {user!r} has no permissions on "
            f"it): create it with 'rabbitmqctl add_vhost {vhost}' (or in the management UI) "
            f"and grant the user access with 'rabbitmqctl set_permissions -p "
            f'{vhost} {user} ".*" ".*" ".*"\''
        )
    return f"{type(exc).__name__}: {text}"
