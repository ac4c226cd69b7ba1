"""Broker URLs for tests: parsing one for its host and credentials, pointing one into a vhost,
naming test vhosts, and checking that a broker answers on its port."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .._errors import ConfigurationError
from .._url import check_url, redact

__all__ = [
    "DEFAULT_AMQP_URL",
    "ENV_AMQP_URL",
    "VHOST_PREFIX",
    "AmqpTarget",
    "amqp_target",
    "broker_answers",
    "host_in_url",
    "is_loopback",
    "new_vhost_name",
    "tcp_problem",
    "url_with_vhost",
]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
ENV_AMQP_URL = "AMQP_URL"
VHOST_PREFIX = "amqp-events-test-"


@dataclass(frozen=True)
class AmqpTarget:
    """Where an AMQP URL points, and who logs in: defaults filled in."""

    host: str
    port: int
    username: str
    password: str


def amqp_target(url: str) -> AmqpTarget:
    """The host, port and credentials of ``url``; :class:`ConfigurationError` if not AMQP."""
    parts = check_url(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(f"broker URL {redact(url)!r} is not amqp:// or amqps://")
    return AmqpTarget(
        host=parts.hostname or "localhost",
        port=parts.port or (5671 if parts.scheme == "amqps" else 5672),
        # Defaults as in the AMQP URI spec and in every client: guest/guest.
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
    )


def host_in_url(host: str) -> str:
    """``host`` as written in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_with_vhost(url: str, vhost: str) -> str:
    """``url`` pointing into ``vhost`` (URL-quoted in the path: ``/`` becomes ``%2F``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def new_vhost_name() -> str:
    """A fresh vhost name, ``amqp-events-test-<12 hex digits>``."""
    return f"{VHOST_PREFIX}{uuid.uuid4().hex[:12]}"


def tcp_problem(url: str, timeout: float) -> str | None:
    """Why a TCP connection to the broker of ``url`` fails, or None when it succeeds."""
    target = amqp_target(url)
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{target.host}:{target.port}: {exc.strerror or exc}"


def broker_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the host and port of ``url`` succeeds (no AMQP handshake).

    A URL that is not ``amqp://`` or ``amqps://`` raises :class:`ConfigurationError`.
    """
    return tcp_problem(url, timeout) is None
