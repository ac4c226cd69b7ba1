"""A queue's length limits as RabbitMQ 3.10 applies them: ``x-max-length`` and
``x-max-length-bytes`` (bodies of ready messages), ``x-overflow``, and a quorum queue's
``reject-publish`` soft limit."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ._message import Message

__all__ = ["LengthLimits", "length_limits", "ready_bytes"]


def length_limits(arguments: Mapping[str, Any], *, quorum: bool) -> LengthLimits | None:
    """The limits the queue ``arguments`` set, or None when they set none."""
    max_length: int | None = arguments.get("x-max-length")
    max_bytes: int | None = arguments.get("x-max-length-bytes")
    if max_length is None and max_bytes is None:
        return None
    return LengthLimits(max_length, max_bytes, arguments.get("x-overflow", "drop-head"), quorum)


def ready_bytes(ready: Collection[Message]) -> int:
    """The body bytes of ``ready``: what ``x-max-length-bytes`` bounds."""
    return sum(len(message.body) for message in ready)


class LengthLimits:
    """The limits of one queue, and whether a full ``reject-publish`` quorum queue is refusing."""

    __slots__ = ("drop_head", "max_bytes", "max_length", "overflow", "quorum", "rejecting")

    def __init__(
        self, max_length: int | None, max_bytes: int | None, overflow: str, quorum: bool
    ) -> None:
        self.max_length = max_length
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.drop_head = overflow == "drop-head"
        self.quorum = quorum
        self.rejecting = False  # a full quorum queue refusing publishes (reject-publish)

    def describe(self) -> str:
        """The limits and overflow, for messages."""
        limits = []
        if self.max_length is not None:
            limits.append(f"x-max-length {self.max_length}")
        if self.max_bytes is not None:
            limits.append(f"x-max-length-bytes {self.max_bytes}")
        return f"{', '.join(limits)}, x-overflow {self.overflow}"

    def refuses(self, ready: Collection[Message], message: Message) -> bool:
        """Whether a full reject-publish queue refuses ``message``.

        A classic queue refuses a message that would take it over its limit. A quorum queue
        takes it, and refuses what comes once it is over the limit, until it is back at 80%
        of it (RabbitMQ 3.10's rabbit_fifo soft limit).
        """
        if self.drop_head:
            return False
        if not self.quorum:
            return self._would_overflow(ready, message)
        if self.rejecting and self._below_soft_limit(ready):
            self.rejecting = False
        return self.rejecting

    def took(self, ready: Collection[Message]) -> None:
        """A message joined ``ready``: a reject-publish quorum queue now over its limit starts
        refusing."""
        if self.quorum and not self.drop_head and self.over(ready):
            self.rejecting = True

    def over(self, ready: Collection[Message], size: int | None = None) -> bool:
        """Whether ``ready`` (with ``size`` body bytes, counted when None) is over the limits."""
        if self.max_length is not None and len(ready) > self.max_length:
            return True
        if self.max_bytes is None:
            return False
        return (size if size is not None else ready_bytes(ready)) > self.max_bytes

    def _would_overflow(self, ready: Collection[Message], message: Message) -> bool:
        if self.max_length is not None and len(ready) + 1 > self.max_length:
            return True
        return (
            self.max_bytes is not None and ready_bytes(ready) + len(message.body) > self.max_bytes
        )

    def _below_soft_limit(self, ready: Collection[Message]) -> bool:
        if self.max_length is not None and len(ready) > int(self.max_length * 0.8):
            return False
        return self.max_bytes is None or ready_bytes(ready) <= int(self.max_bytes * 0.8)
