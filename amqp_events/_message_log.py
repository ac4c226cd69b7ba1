"""The message logger: a debugging hook that sees each message in and out (goamqp's
``UseMessageLogger``).

It rides on the connection's observer slot, which the dispatch and publish paths already check
once per message: a connection without a message logger pays nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ._codec import Decoder

__all__ = ["LoggedMessage", "MessageLogObserver", "MessageLogger"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One message as a ``with_message_logger`` callback sees it.

    - ``direction``: ``"out"`` once the broker confirmed a publish; ``"in"`` when a message
      was received and decoded, before its handler runs (each delivery, retries included, as
      goamqp logs); ``"dead-lettered"`` when a message was moved to its dead-letter queue
      (``reason`` says why);
    - ``service``: this connection's service;
    - ``routing_key``: the event's routing key;
    - ``where``: the exchange published to (``""`` for the default exchange), or the queue
      consumed from;
    - ``event``: the event (a pydantic model, or a dict); for a dead letter, the raw body bytes;
    - ``reason`` and ``cause``: for a dead letter, the reason (e.g. ``"undecodable"``) and the
      error's description.
    """

    direction: Literal["in", "out", "dead-lettered"]
    service: str
    routing_key: str
    where: str
    event: Any
    reason: str | None = None
    cause: str | None = None


MessageLogger = Callable[[LoggedMessage], None]


class MessageLogObserver:
    """Adapts a message logger to the observer protocol; a failing logger is logged, not raised."""

    __slots__ = ("_callback",)

    def __init__(self, callback: MessageLogger) -> None:
        self._callback = callback

    def _call(self, message: LoggedMessage) -> None:
        try:
            self._callback(message)
        except Exception:
            log.exception("message logger %r failed on %r", self._callback, message.routing_key)

    def received(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        self._call(LoggedMessage("in", service, routing_key, queue, event))

    def handled(self, service: str, queue: str, routing_key: str, event: Any) -> None:
        pass  # "in" was logged on receipt, as goamqp does

    def dead_lettered(
        self,
        service: str,
        queue: str,
        routing_key: str,
        reason: str,
        cause: str,
        body: bytes,
        *,
        exception_type: type[BaseException] | None = None,
        decode: Decoder | None = None,
    ) -> None:
        self._call(LoggedMessage("dead-lettered", service, routing_key, queue, body, reason, cause))

    def published(self, service: str, exchange: str, routing_key: str, event: Any) -> None:
        self._call(LoggedMessage("out", service, routing_key, exchange, event))
