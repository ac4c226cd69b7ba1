"""Memory brokers by name, and the ``memory://`` URLs that name them."""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlsplit

from ..._errors import ConfigurationError

if TYPE_CHECKING:
    from ._broker import MemoryBroker

__all__ = ["DEFAULT_BROKER_NAME", "SCHEME", "by_url", "new_name", "parse_memory_url", "registry"]

DEFAULT_BROKER_NAME: Final = "default"
SCHEME: Final = "memory"

# Every broker alive, by name.
registry: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()
# Brokers created by broker_for_url stay alive for the process, so that two connections given
# the same URL share one broker even when nothing else holds it in between.
by_url: dict[str, MemoryBroker] = {}
_generated_names = itertools.count(1)


def new_name() -> str:
    """A name no broker has: ``broker-<n>``."""
    name = f"broker-{next(_generated_names)}"
    while name in registry:
        name = f"broker-{next(_generated_names)}"
    return name


_SWITCH: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_memory_url(url: str) -> tuple[str, bool | None]:
    """The broker name in a ``memory://`` URL (``"default"`` for ``memory://``), and its
    ``virtual_time`` query (``memory://tests?virtual_time=1``; None when absent)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ConfigurationError(
            f"{url!r} is not a memory broker URL: use 'memory://' or 'memory://<name>'"
        )
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigurationError(
            f"memory broker URL {url!r} has a path; use 'memory://<name>' only"
        )
    virtual_time: bool | None = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        switch = _SWITCH.get(value.lower())
        if key != "virtual_time" or switch is None or virtual_time is not None:
            raise ConfigurationError(
                f"memory broker URL {url!r}: the only query it takes is 'virtual_time=1' "
                "(or 0), once"
            )
        virtual_time = switch
    return parts.netloc or DEFAULT_BROKER_NAME, virtual_time
