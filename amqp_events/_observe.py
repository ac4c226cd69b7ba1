"""Observers: what a connection did, for tests and the message logger; and its instrument.

Each connection has one ``Observers`` slot; the dispatch and publish paths check it once per
message and call the observer only when one is attached. Metrics and tracing ride beside it in
``instrument`` (see ``_instrument``), fixed when the connection starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._codec import Decoder

if TYPE_CHECKING:
    from ._instrument import Instrument

__all__ = ["Observer", "Observers"]


class Observer(Protocol):
    def received(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        """A message was decoded and its handler is about to run."""

    def handled(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        """A handler succeeded and its message was acknowledged."""

    def dead_lettered(
        self,
        service: str,
        queue: str,
        routing_key: str,
        reason: str,
        cause: str,
        body: bytes,
        *,
        exception_type: type[BaseException] | None,
        decode: Decoder | None,
    ) -> None:
        """A message went to a DLQ. ``cause`` says why; ``exception_type`` is the type of the
        exception that did it, if one did; ``decode`` is the decoder of the handler the
        message's key reached, if any (the body may not decode with it)."""

    def published(self, service: str, exchange: str, routing_key: str, event: Any) -> None: ...


class Observers:
    """The observers attached to one connection (usually none), and what they may ask of its
    dispatchers."""

    __slots__ = ("_attached", "_decoders", "current", "instrument")

    def __init__(self) -> None:
        self._attached: list[Observer] = []
        self._decoders: dict[str, Callable[[str], Decoder | None]] = {}
        self.current: Observer | None = None  # what the hot paths look at
        # Metrics and tracing (with_prometheus, with_tracing): set before dispatchers are made.
        self.instrument: Instrument | None = None

    def attach(self, observer: Observer) -> None:
        self._attached.append(observer)
        self._refresh()

    def detach(self, observer: Observer) -> None:
        self._attached.remove(observer)
        self._refresh()

    def add_decoders(self, queue: str, decoder_for_key: Callable[[str], Decoder | None]) -> None:
        """How the dispatcher of ``queue`` decodes each routing key (for dead letters)."""
        self._decoders[queue] = decoder_for_key

    def decoder(self, queue: str, routing_key: str) -> Decoder | None:
        """The decoder of the handler ``routing_key`` reaches on ``queue``, if any."""
        decoder_for_key = self._decoders.get(queue)
        return decoder_for_key(routing_key) if decoder_for_key is not None else None

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

    def received(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        for o in self._observers:
            o.received(service, queue, routing_key, event)

    def handled(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        for o in self._observers:
            o.handled(service, queue, routing_key, event)

    def dead_lettered(
        self,
        service: str,
        queue: str,
        routing_key: str,
        reason: str,
        cause: str,
        body: bytes,
        *,
        exception_type: type[BaseException] | None,
        decode: Decoder | None,
    ) -> None:
        for o in self._observers:
            o.dead_lettered(
                service,
                queue,
                routing_key,
                reason,
                cause,
                body,
                exception_type=exception_type,
                decode=decode,
            )

    def published(self, service: str, exchange: str, routing_key: str, event: Any) -> None:
        for o in self._observers:
            o.published(service, exchange, routing_key, event)
