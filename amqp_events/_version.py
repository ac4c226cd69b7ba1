"""The installed package's version, read once from its metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]


def _installed_version() -> str:
    try:
        return version("amqp-events")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0"


VERSION = _installed_version()
