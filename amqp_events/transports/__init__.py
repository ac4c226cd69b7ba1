"""Transports: the seam between amqp-events and a broker (RabbitMQ, or the in-memory broker)."""

from __future__ import annotations

from urllib.parse import urlsplit

from ._base import Delivery, OutgoingProperties, Transport

__all__ = ["Delivery", "OutgoingProperties", "Transport", "transport_for"]


def transport_for(url: str, *, connection_name: str, connect_timeout: float) -> Transport:
    """The transport for ``url``'s scheme (checked beforehand by ``_url.check_url``)."""
    if urlsplit(url).scheme == "memory":
        from ._memory import MemoryTransport

        return MemoryTransport(url)
    from ._amqp import AmqpTransport

    return AmqpTransport(url, connection_name=connection_name, connect_timeout=connect_timeout)
