"""Observers: what a connection did, for tests (and later metrics and tracing).

Each connection has one ``Observers`` slot; the dispatch and publish paths check it once per
message and call the observer only when one is attached.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Observer", "Observers"]


class Observer(Protocol):
    def handled(self, service: str, queue: str, routing_key: str, event: Any) -> None: ...

    def dead_lettered(
        self, service: str, queue: str, routing_key: str, reason: str, cause: str, body: bytes
    ) -> None: ...

    def published(self, service: str, exchange: str, routing_key: str, event: Any) -> None: ...


class Observers:
    """The observers attached to one connection (usually none)."""

    __slots__ = ("_attached", "current")

    def __init__(self) -> None:
        self._attached: list[Observer] = []
        self.current: Observer | None = None  # what the hot paths look at

    def attach(self, observer: Observer) -> None:
        self._attached.append(observer)
        self._refresh()

    def detach(self, observer: Observer) -> None:
        self._attached.remove(observer)
        self._refresh()

    def _refresh(self) -> None:
        if not self._attached:
            self.current = None
        elif len(self._attached) == 1:
            self.current = self._attached[0]
        else:
            self.current = _Fanout(list(self._attached))


class _Fanout:
    __slots__ = ("_observers",)

    def __init__(self, observers: list[Observer]) -> None:
        self._observers = observers

    def handled(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        for o in self._observers:
            o.handled(service, queue, routing_key, event)

    def dead_lettered(
        self, service: str, queue: str, routing_key: str, reason: str, cause: str, body: bytes
    ) -> None:
        for o in self._observers:
            o.dead_lettered(service, queue, routing_key, reason, cause, body)

    def published(self, service: str, exchange: str, routing_key: str, event: Any) -> None:
        for o in self._observers:
            o.published(service, exchange, routing_key, event)
