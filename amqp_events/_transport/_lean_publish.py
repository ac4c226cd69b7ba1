"""Publishing on a hot channel (confirm mode): frames written by hand, confirms matched by tag.

Each publish gets the channel's next delivery tag and a future, settled when the broker's
Basic.Ack or Basic.Nack for that tag (or a later one, with ``multiple``) arrives: one dict
lookup per confirm, no task. A mandatory publish the broker returns (Basic.Return, before its
confirm) is matched by its message id and fails as unroutable when its confirm comes. One timer
per channel, not one per publish, times out what waits past its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from ._frames import (
    Confirm,
    Delivered,
    Properties,
    PropertiesTemplate,
    Returned,
    append_content_frames,
    publish_method_frame,
)
from ._lean_link import LeanLink

__all__ = ["ConfirmingChannel", "Nacked", "ReturnedByBroker", "properties_for"]

_ROUTES_LIMIT: Final = 1024  # method frames kept per channel: (exchange, key, mandatory)
_TEMPLATES_LIMIT: Final = 512  # constant property sets kept: a publisher's per-key headers
CONTENT_TYPE_JSON: Final = "application/json"
PERSISTENT: Final = 2


class Nacked(Exception):
    """The broker refused the publish (Basic.Nack)."""


class ReturnedByBroker(Exception):
    """The broker returned the mandatory publish: no queue took it."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


_templates: dict[tuple[int, str], tuple[Mapping[str, Any], PropertiesTemplate]] = {}


def properties_for(headers: Mapping[str, Any], content_type: str | None) -> PropertiesTemplate:
    """The persistent properties of a publish with ``headers`` as its constant headers, encoded
    once per headers object (a publisher passes the same one for every event of a key)."""
    key = (id(headers), content_type or CONTENT_TYPE_JSON)
    found = _templates.get(key)
    if found is not None and found[0] is headers:
        return found[1]
    template = PropertiesTemplate(
        Properties(
            content_type=content_type or CONTENT_TYPE_JSON,
            delivery_mode=PERSISTENT,
            headers=dict(headers),
        )
    )
    if len(_templates) >= _TEMPLATES_LIMIT:
        del _templates[next(iter(_templates))]
    # The strong reference keeps id(headers) from being reused while the entry lives.
    _templates[key] = (headers, template)
    return template


class ConfirmingChannel:
    """One channel in confirm mode whose publishes go by hand (a ``HotChannel``)."""

    def __init__(
        self, link: LeanLink, number: int, frame_max: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.number = number
        self._link = link
        self._frame_max = frame_max
        self._loop = loop
        self._next_tag = 1
        # Per publish in flight, by tag: its future and its deadline. No object of its own: with
        # a thousand in flight, every object that lives until its confirm is one more for the
        # cyclic GC to promote and traverse (about a fifth of the publish path's CPU).
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._deadlines: dict[int, float] = {}
        self._mandatory: dict[str, int] = {}  # message id -> tag, while in flight
        self._mandatory_ids: dict[int, str] = {}  # tag -> message id, while in flight
        self._returned: dict[int, ReturnedByBroker] = {}  # returned, its confirm still to come
        self._routes: dict[tuple[str, str, bool], bytes] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.failure: BaseException | None = None  # set once the channel is gone

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: bytes,
        *,
        mandatory: bool,
        message_id: str | None,
        timeout: float,
        waiter: asyncio.Future[None] | None = None,
    ) -> asyncio.Future[None]:
        """Write the publish (with the others of this loop turn); its confirm settles the
        future (``waiter``, or a new one): None, or ``Nacked``, ``ReturnedByBroker``,
        ``TimeoutError``, or the channel's end."""
        if self.failure is not None:
            raise self.failure
        route = (exchange, routing_key, mandatory)
        method = self._routes.get(route)
        if method is None:
            if len(self._routes) >= _ROUTES_LIMIT:
                self._routes.clear()
            method = self._routes[route] = publish_method_frame(
                self.number, exchange, routing_key, mandatory=mandatory
            )
        parts: list[Any] = [method]
        append_content_frames(parts, self.number, body, properties, self._frame_max)
        self._link.write_parts(parts)
        tag = self._next_tag
        self._next_tag = tag + 1
        future = waiter if waiter is not None else self._loop.create_future()
        deadline = self._loop.time() + timeout
        self._waiting[tag] = future
        self._deadlines[tag] = deadline
        if mandatory and message_id:
            self._mandatory[message_id] = tag
            self._mandatory_ids[tag] = message_id
        timer = self._timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._time_out)
        return future

    # -- HotChannel --------------------------------------------------------------------------

    def received(self, record: Delivered | Returned | Confirm) -> None:
        if type(record) is Confirm:
            if record.multiple:
                waiting = self._waiting
                while waiting:
                    tag = next(iter(waiting))
                    if tag > record.delivery_tag:
                        break
                    self._settle(tag, waiting.pop(tag), record.ack)
            else:
                future = self._waiting.pop(record.delivery_tag, None)
                if future is not None:
                    self._settle(record.delivery_tag, future, record.ack)
        elif type(record) is Returned:
            message_id = record.properties.message_id
            tag = self._mandatory.pop(message_id, 0) if message_id else 0
            if tag in self._waiting:
                self._returned[tag] = ReturnedByBroker(record.reply_code, record.reply_text)

    def closed(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        waiting, self._waiting = self._waiting, {}
        self._deadlines.clear()
        self._mandatory.clear()
        self._mandatory_ids.clear()
        self._returned.clear()
        for future in waiting.values():
            if not future.done():
                future.set_exception(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- settling ----------------------------------------------------------------------------

    def _settle(self, tag: int, future: asyncio.Future[None], ack: bool) -> None:
        del self._deadlines[tag]
        returned = None
        if self._mandatory_ids:
            message_id = self._mandatory_ids.pop(tag, None)
            if message_id is not None:
                self._mandatory.pop(message_id, None)
                returned = self._returned.pop(tag, None)
        if future.done():  # its publisher stopped waiting (cancelled)
            return
        if returned is not None:
            future.set_exception(returned)
        elif ack:
            future.set_result(None)
        else:
            future.set_exception(Nacked())

    def _time_out(self) -> None:
        """Fail what waited past its deadline; wake again at the next deadline (deadlines
        mostly grow with the tag, so this runs about once per timeout, not per publish)."""
        self._timer = None
        now = self._loop.time()
        earliest = None
        for tag, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[tag]
                future = self._waiting.pop(tag)
                message_id = self._mandatory_ids.pop(tag, None)
                if message_id is not None:
                    self._mandatory.pop(message_id, None)
                    self._returned.pop(tag, None)
                if not future.done():
                    future.set_exception(TimeoutError())
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = self._loop.call_at(earliest, self._time_out)
