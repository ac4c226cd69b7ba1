"""Broker URLs: checked before anything connects, and never shown with their password."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ._errors import ConfigurationError

__all__ = [
    "SCHEMES",
    "URL_ENVIRONMENT_VARIABLE",
    "check_url",
    "check_urls",
    "redact",
    "url_or_environment",
]

SCHEMES = ("amqp", "amqps", "memory")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    if ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def check_url(url: str) -> SplitResult:
    """Parse ``url`` or raise ConfigurationError saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"broker URL must be a non-empty str, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigurationError(f"broker URL {redact(url)!r} is malformed: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"broker URL {redact(url)!r} has unknown scheme {parts.scheme!r}: "
            "use amqp://, amqps:// or memory://"
        )
    if parts.scheme != "memory" and not parts.hostname:
        raise ConfigurationError(f"broker URL {redact(url)!r} names no host")
    if port is not None and not 0 < port < 65536:
        raise ConfigurationError(f"broker URL {redact(url)!r}: port {port} is out of range")
    return parts


def check_urls(url: str | Sequence[str]) -> list[str]:
    """One URL per broker host, each checked.

    ``amqp://user:pass@h1:5672,h2:5673/vhost`` (or a list of URLs) names several hosts of one
    cluster; they are tried in turn when connecting and reconnecting.
    """
    if isinstance(url, str):
        urls = _expand_hosts(url)
    else:
        urls = [u for one in url for u in _expand_hosts(one)] if url else []
        if not urls:
            raise ConfigurationError("broker URL list is empty")
    schemes = {check_url(u).scheme for u in urls}
    if "memory" in schemes and len(urls) > 1:
        raise ConfigurationError("memory:// takes a single URL, not a list of hosts")
    return urls


def _expand_hosts(url: str) -> list[str]:
    if not isinstance(url, str):
        raise ConfigurationError(f"broker URL must be a str, got {url!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"broker URL {redact(url)!r} is malformed: {exc}") from None
    if "," not in parts.netloc:
        return [url]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    return [urlunsplit(parts._replace(netloc=prefix + host.strip())) for host in hosts.split(",")]


URL_ENVIRONMENT_VARIABLE: Final = "AMQP_URL"  # where Connection(service) finds its broker


def url_or_environment(service: str, url: str | Sequence[str] | None) -> str | Sequence[str]:
    """``url``, else ``AMQP_URL``; neither is an error naming both."""
    if url is not None:
        return url
    from_environment = os.environ.get(URL_ENVIRONMENT_VARIABLE, "").strip()
    if not from_environment:
        raise ConfigurationError(
            f"Connection({service!r}) has no broker URL: pass url= (e.g. "
            f"'amqp://user:password@host/') or set the {URL_ENVIRONMENT_VARIABLE} environment "
            "variable; for the in-memory broker, pass 'memory://' explicitly"
        )
    return from_environment
