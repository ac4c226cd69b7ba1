"""Broker URLs: checked before anything connects, and never shown with their password."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

from ._errors import ConfigurationError

__all__ = ["SCHEMES", "check_url", "redact"]

SCHEMES = ("amqp", "amqps", "memory")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


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
