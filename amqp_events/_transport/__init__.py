"""Transports: the seam between amqp-events and a broker; all broker I/O goes through here.

Private: a ``Connection`` picks its transport from the URL (``amqp://``/``amqps://`` or
``memory://``). The modules:

- ``_base``: the ``Transport`` and session protocols, ``Delivery``, ``OutgoingProperties``;
- ``_reconnecting``: the transport a ``Connection`` uses, over one session at a time: its
  ``Transport`` face and the publish's common path, over three layers:
  - ``_recovery``: reopens a lost session with backoff and replays topology and consumers into
    it, restores a consumer the broker cancelled, tells close listeners;
  - ``_held_publishes``: publishes waiting for a reconnection, and the poison-publish guard;
  - ``_topology_check``: declares the topology again on a live connection (periodic check, an
    exchange found deleted);
- RabbitMQ, through aio-pika/aiormq (the only modules that import them):
  - ``_amqp_opener``: opens a session on the first host that answers (heartbeat, TLS, failover);
  - ``_amqp``: a session on RabbitMQ: its channels, declaring, consuming;
  - ``_amqp_publishing``: its publishes, with confirms and returns matched to each;
  - ``_amqp_channels``: its connection and channels, aiormq's errors as ours;
- the hot path on RabbitMQ (issue #18): the frames sent and received once per message, by hand,
  on aiormq's connection:
  - ``_lean_link``: the connection's reader and writer: hot frames parsed as they arrive, the
    rest fed on to aiormq; writes batched per event-loop turn;
  - ``_lean_publish``: a confirm-mode channel: publishes matched to their confirms and returns;
  - ``_lean_consume``: the consume channel: deliveries to their consumers, acks and rejects;
  - ``_frames`` and ``_frame_tables``: the AMQP 0-9-1 codec of those frames (no I/O);
- ``_wire``: what AMQP can carry (header values, frame sizes) and what moves may copy;
- ``memory``: the in-process broker, with its session (``memory._session``).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from .._url import redact
from ._base import Delivery, OutgoingProperties, SessionOpener, Transport
from ._reconnecting import ReconnectingTransport

__all__ = ["Delivery", "OutgoingProperties", "Transport", "transport_for"]


def transport_for(
    urls: Sequence[str],
    *,
    connection_name: str,
    connect_timeout: float,
    publish_timeout: float,
    reconnect_timeout: float | None,
    ssl_context: ssl.SSLContext | None = None,
    topology_check_interval: float | None = None,
) -> Transport:
    """A reconnecting transport over the broker ``urls`` name (checked by ``_url.check_urls``)."""
    if urlsplit(urls[0]).scheme == "memory":
        from .memory._session import MemoryOpener

        opener: SessionOpener = MemoryOpener(urls[0])
    else:
        from ._amqp_opener import AmqpOpener

        opener = AmqpOpener(
            urls,
            connection_name=connection_name,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
        )
    return ReconnectingTransport(
        opener,
        description=", ".join(redact(u) for u in urls),
        publish_timeout=publish_timeout,
        reconnect_timeout=reconnect_timeout,
        topology_check_interval=topology_check_interval,
    )
