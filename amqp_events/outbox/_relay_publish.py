"""The relay's publishing: a pass's rows sent to the broker as their publishers sent them.

Each row becomes the publish it stored: its exchange, key, body and mandatory flag, its message id
and time as the envelope, its publisher's constant headers as one shared object per distinct set
(encoded once by the transport) and its per-message headers on top. Rows of one partition go in
order: runs of non-mandatory rows pipelined, a mandatory row or a retried one alone, every row
alone with ``strict_order``; the first failure ends the partition's turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from .. import _naming as naming
from .._envelope import Envelope
from .._errors import ConfigurationError
from .._instrument import Instrument, publish_with
from .._transport._base import PublishItem, Transport
from ._tables import decode_headers

if TYPE_CHECKING:
    from ._relay_pass import RelayOptions

__all__ = ["Outcome", "RowPublishing", "faults"]

log = logging.getLogger(__name__)

_NO_HEADERS: Mapping[str, Any] = MappingProxyType({})
# The headers an envelope sets per message; the others a row carries are its publisher's.
_PER_MESSAGE = (
    naming.CE_ID,
    naming.CE_TIME,
    naming.CE_CORRELATION_ID,
    naming.CE_CAUSATION_ID,
    # The trace context it was written in (W3C's fields; another propagator's would be
    # taken as constant headers: correct, but encoded afresh each time).
    "traceparent",
    "tracestate",
    "baggage",
)
_CONSTANTS_LIMIT = 256


class _Faults:
    """Test hooks: a test sets one to break the relay at that point, as a crash would."""

    after_confirm: Callable[[Sequence[str]], Awaitable[None]] | None = None


faults = _Faults()


class Outcome:
    """What became of one row's publish: ``error`` None when the broker confirmed it."""

    __slots__ = ("error", "row")

    def __init__(self, row: Row[Any], error: Exception | None) -> None:
        self.row = row
        self.error = error


class RowPublishing:
    """The relay's publishing part (``Relay`` sets these up)."""

    _service: str
    _options: RelayOptions
    _transport: Transport | None
    _instrument: Instrument | None
    # Distinct constant header sets (a publisher's route headers), one object each: the
    # transport encodes a constant set once, by identity.
    _constants: dict[tuple[tuple[str, Any], ...], Mapping[str, Any]]

    async def _publish(self, rows: list[Row[Any]]) -> list[Outcome]:
        by_partition: dict[str, list[Row[Any]]] = {}
        for row in rows:
            by_partition.setdefault(row.partition_key, []).append(row)
        results = await asyncio.gather(*(self._publish_partition(p) for p in by_partition.values()))
        outcomes = [o for partition in results for o in partition]
        hook = faults.after_confirm
        if hook is not None:
            await hook([o.row.message_id for o in outcomes if o.error is None])
        return outcomes

    async def _publish_partition(self, rows: list[Row[Any]]) -> list[Outcome]:
        """In order: runs of non-mandatory rows pipelined (one channel keeps their order), a
        mandatory row alone (it may be unroutable: nothing after it goes before it is
        confirmed), a row being retried alone (the rows after it go once it is confirmed, not
        again with each of its attempts), every row alone with ``strict_order``. The first
        failure ends the
        partition's turn: the rows sent after it in its run are left unsent, to be published
        again after it (they reached the broker first; their new copies come after it)."""
        outcomes: list[Outcome] = []
        pipelined = not self._options.strict_order
        start = 0
        while start < len(rows):
            end = start + 1
            if pipelined and _pipelinable(rows[start]):
                while end < len(rows) and _pipelinable(rows[end]):
                    end += 1
            run = rows[start:end]
            results = await self._send_run(run)
            for index, (row, result) in enumerate(zip(run, results, strict=True)):
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
                error = result if isinstance(result, Exception) else None
                outcomes.append(Outcome(row, error))
                if error is not None:
                    if index + 1 < len(run):
                        self._note_overtaken(row, run[index + 1 :])
                    return outcomes
            start = end
        return outcomes

    def _note_overtaken(self, failed: Row[Any], later: list[Row[Any]]) -> None:
        log.warning(
            "%s: outbox event %s (partition %r) was not published, but %d later event(s) of "
            "its partition were sent with it; they are published again after it (same "
            "message ids; an inbox absorbs the earlier copies). strict_order=True avoids this",
            self._service,
            failed.message_id,
            failed.partition_key,
            len(later),
        )

    async def _send_run(self, run: list[Row[Any]]) -> list[BaseException | None]:
        """Publish ``run`` pipelined; each row's outcome (None: confirmed)."""
        transport = self._transport
        if self._instrument is not None or len(run) == 1 or transport is None:
            return await asyncio.gather(*(self._send(r) for r in run), return_exceptions=True)
        # No task per row: the transport writes them all, then awaits each confirm.
        return await transport.publish_batch([self._item(row) for row in run])

    def _item(self, row: Row[Any]) -> PublishItem:
        # The stored headers (the envelope's included) travel as a publisher's would: the
        # per-message ones (id, time, correlation) as the envelope, the rest as the shared
        # constant headers, encoded once per distinct set (as for a fresh event). The row's
        # own message id and time; no per-id lock (the id is the row's alone).
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        constant, extra = self._split_headers(decode_headers(row.headers))
        return PublishItem(
            row.exchange,
            row.routing_key,
            row.body,
            constant,
            row.mandatory,
            Envelope(row.message_id, created, extra),
        )

    async def _send(self, row: Row[Any]) -> None:
        transport = self._transport
        if transport is None:
            raise ConfigurationError("the outbox relay runs before its connection started")
        item = self._item(row)
        instrument = self._instrument
        if instrument is None:
            await transport.publish(
                item.exchange,
                item.routing_key,
                item.body,
                item.headers,
                mandatory=item.mandatory,
                envelope=item.envelope,
            )
            return
        # Counted in published_total, and traced: the publish span continues the trace the
        # row was written in (the context it stored).
        await publish_with(
            instrument,
            transport,
            self._service,
            item.exchange,
            item.routing_key,
            item.body,
            item.headers,
            mandatory=item.mandatory,
            envelope=item.envelope,
        )

    def _split_headers(self, headers: dict[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any]]:
        extra = {k: headers.pop(k) for k in _PER_MESSAGE if k in headers}
        if not headers:
            return _NO_HEADERS, extra
        try:
            key = tuple(headers.items())
            shared = self._constants.get(key)
        except TypeError:  # an unhashable value (a table or a list): encoded per message
            extra.update(headers)
            return _NO_HEADERS, extra
        if shared is None:
            if len(self._constants) >= _CONSTANTS_LIMIT:
                self._constants.clear()
            shared = self._constants[key] = MappingProxyType(headers)
        return shared, extra


def _pipelinable(row: Row[Any]) -> bool:
    return not row.mandatory and not row.attempts
