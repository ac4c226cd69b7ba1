"""The relay: publishes committed outbox rows with the broker's confirm, then marks them sent.

One pass: find the partitions whose oldest unsent row is due, lock them (PostgreSQL: advisory
locks held by the pass's transaction; SQLite: one relay per database holds a file lock), read
their rows in id order a batch at a time, publish each batch (partitions side by side, each
partition's rows in order), mark the confirmed ones sent and give the failed one a later
attempt, which holds back the rest of its partition. Batches are pipelined: the previous one
is marked and the next one read while a batch waits for its confirms. A relay killed
anywhere in a pass leaves its unmarked rows unsent, and the next pass, of this relay or
another, publishes them again with the same message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Row, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import _naming as naming
from .._envelope import Envelope
from .._errors import ConfigurationError
from .._instrument import Instrument, publish_with
from .._setup import Setup, SetupBuilder
from .._setup._builder import SetupPlan
from .._setup._instruments import prometheus_registry_for
from .._transport._base import PublishItem, Transport
from ._database import transaction
from ._outbox import Outbox
from ._tables import decode_headers, notify_channel

__all__ = ["RelayOptions", "faults", "outbox_relay"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayOptions:
    batch_size: int
    poll_interval: float
    retry_initial: float
    retry_max: float
    retention: timedelta
    cleanup_interval: float
    strict_order: bool


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


def outbox_relay(
    outbox: Outbox,
    *,
    batch_size: int = 1000,
    poll_interval: float | None = None,
    retry_backoff: tuple[float, float] = (0.2, 10.0),
    retention: timedelta = timedelta(hours=1),
    cleanup_interval: float = 60.0,
    strict_order: bool = False,
) -> Setup:
    """A setup that relays ``outbox`` through this connection while it is started.

    Each pass takes due rows ``batch_size`` at a time, publishes a batch with publisher
    confirms (pipelined) and marks it sent while the next batch is published, reading the one
    after meanwhile. With ``with_prometheus(registry)`` on the same connection it keeps the
    gauges ``amqp_events_outbox_pending_rows`` and ``amqp_events_outbox_blocked_partitions``.
    It wakes when a transaction in this process commits events, on PostgreSQL when any does
    (LISTEN/NOTIFY), and at least every
    ``poll_interval`` seconds (default 1.0 on PostgreSQL, where polling is only the fallback,
    0.05 on SQLite, which has no notifications). A row the broker does not confirm is tried
    again after ``retry_backoff`` (initial, max) seconds, doubling, and holds back the later
    rows of its partition meanwhile. Rows sent more than ``retention`` ago are deleted every
    ``cleanup_interval`` seconds, in batches. Several relays (service instances) on one
    PostgreSQL database share the work by partition; on SQLite one relay at a time works.

    Rows of one partition are pipelined: a run of them is sent before the first is confirmed.
    If the broker refuses one of them and takes a later one (a full ``reject-publish`` queue
    that drains meanwhile does this), the later rows already reached the broker; they are not
    marked sent and are published again after the refused one, so the last copy of each
    arrives in order (the inbox absorbs the earlier copy). ``strict_order=True`` sends one row
    of a partition at a time instead, each after the previous one's confirm: no row ever
    reaches the broker before an earlier row of its partition, at the cost of a round trip
    per row and partition (partitions still go side by side).
    """
    if not isinstance(outbox, Outbox):
        raise ConfigurationError(f"outbox_relay takes an Outbox, got {outbox!r}")
    initial, maximum = retry_backoff
    for name, value in (
        ("batch_size", batch_size),
        ("retry_backoff[0]", initial),
        ("retry_backoff[1]", maximum),
        ("cleanup_interval", cleanup_interval),
        ("poll_interval", 1.0 if poll_interval is None else poll_interval),
    ):
        if not value > 0:
            raise ConfigurationError(f"outbox_relay: {name} must be positive, got {value!r}")
    if poll_interval is None:
        poll_interval = 1.0 if outbox._db.is_postgresql else 0.05
    options = RelayOptions(
        batch_size,
        poll_interval,
        initial,
        max(initial, maximum),
        retention,
        cleanup_interval,
        bool(strict_order),
    )

    def setup(builder: SetupBuilder) -> None:
        relay = Relay(outbox, options, builder.service_name, builder._plan)
        builder._plan.transport_users.append(relay.attach)
        builder.run_while_started(f"outbox-relay:{outbox.table.name}", relay.run)

    return setup


# A pass reads, publishes and marks up to this many batches before it looks for newly due
# partitions again (and, on PostgreSQL, lets other relays have its partitions).
_MAX_BATCHES_PER_PASS = 20
# Seconds between two updates of the relay's gauges (with_prometheus).
_GAUGE_INTERVAL = 1.0


@dataclass(slots=True)
class _Claimed:
    rows: list[Row[Any]]
    partitions: list[str]
    now: datetime
    stopped: set[str]  # partitions held back in this pass: nothing more of them is published


@dataclass(slots=True)
class _Outcome:
    row: Row[Any]
    error: Exception | None


class Relay:
    """One connection's relay of one outbox."""

    def __init__(
        self, outbox: Outbox, options: RelayOptions, service: str, plan: SetupPlan | None = None
    ) -> None:
        self._plan = plan
        # Distinct constant header sets (a publisher's route headers), one object each: the
        # transport encodes a constant set once, by identity.
        self._constants: dict[tuple[tuple[str, Any], ...], Mapping[str, Any]] = {}
        self._gauges: tuple[Any, Any] | None = None  # (pending rows, blocked partitions)
        self._gauges_due = 0.0
        self._outbox = outbox
        self._db = outbox._db
        self._table = outbox.table
        self._options = options
        self._service = service
        self._transport: Transport | None = None
        self._instrument: Instrument | None = None
        self._wake = asyncio.Event()
        self._lock = self._db.relay_lock(self._table.name)
        self._next_due: float | None = None  # when a row in backoff is due (monotonic)

    def attach(self, transport: Transport, instrument: Instrument | None) -> None:
        self._transport = transport
        self._instrument = instrument

    async def run(self) -> None:
        outbox = self._outbox
        outbox._waiters.add(self._wake)
        listener = (
            asyncio.get_running_loop().create_task(self._listen())
            if self._db.is_postgresql
            else None
        )
        next_cleanup = time.monotonic() + self._options.cleanup_interval
        failures = 0
        self._gauges = self._find_gauges()
        try:
            while True:
                self._wake.clear()
                if not await self._lock.acquire_outbox():
                    await self._sleep(self._options.poll_interval)
                    continue
                try:
                    published = await self._pass()
                    await self._update_gauges()
                    if time.monotonic() >= next_cleanup:
                        next_cleanup = time.monotonic() + self._options.cleanup_interval
                        await outbox.cleanup(retention=self._options.retention)
                except Exception:
                    failures += 1
                    delay = _backoff(self._options, failures)
                    log.warning(
                        "%s: outbox relay of %s failed (%d in a row); trying again in %.1fs",
                        self._service,
                        self._table.name,
                        failures,
                        delay,
                        exc_info=True,
                    )
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if published < self._options.batch_size:
                    await self._sleep(self._wait_time())
        finally:
            outbox._waiters.discard(self._wake)
            self._lock.release_outbox()
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    def _find_gauges(self) -> tuple[Any, Any] | None:
        """The gauges of the connection's ``with_prometheus`` registry, if it has one (the
        plan is complete once the connection started)."""
        registry = prometheus_registry_for(self._plan) if self._plan is not None else None
        if registry is None:
            return None
        from .._metrics import outbox_gauges_for

        gauges = outbox_gauges_for(registry)
        labels = (self._service, self._table.name)
        return (
            gauges.pending_rows.labels(*labels),
            gauges.blocked_partitions.labels(*labels),
        )

    async def _update_gauges(self) -> None:
        """At most once per ``_GAUGE_INTERVAL``: two counting queries, not one per pass."""
        if self._gauges is None or time.monotonic() < self._gauges_due:
            return
        self._gauges_due = time.monotonic() + _GAUGE_INTERVAL
        pending, blocked = await self._outbox._pending_and_blocked()
        self._gauges[0].set(pending)
        self._gauges[1].set(blocked)

    def _wait_time(self) -> float:
        wait = self._options.poll_interval
        if self._next_due is not None:
            wait = min(wait, max(0.0, self._next_due - time.monotonic()))
        return wait

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # -- one pass ----------------------------------------------------------------------------

    async def _pass(self) -> int:
        """Publish what is due; return how many rows were taken.

        Batches are pipelined: while one batch waits for its confirms, the next is read, and
        the previous one is marked. A batch is published only once the one before it is
        settled by the broker, so each partition's rows go out in id order and a failure
        stops its partition before any later row of it is sent.
        """
        engine = self._db.engine
        if self._db.is_postgresql:
            # The advisory locks live as long as this transaction: every batch of the pass is
            # read in it. Marks commit in short transactions of their own (the rows are only
            # read here, never locked), each before this one ends and frees the partitions.
            async with transaction(engine) as conn:
                claimed = await self._claim(conn)

                async def read_pg(after: int) -> list[Row[Any]]:
                    return await self._read_more(conn, claimed.partitions, after)

                return await self._pipeline(claimed, read_pg)

        # SQLite: this relay alone works on the database (its file lock); short transactions,
        # so writers never wait for the broker.
        async with transaction(engine) as conn:
            claimed = await self._claim(conn)

        async def read_sqlite(after: int) -> list[Row[Any]]:
            async with transaction(engine) as conn:
                return await self._read_more(conn, claimed.partitions, after)

        return await self._pipeline(claimed, read_sqlite)

    async def _pipeline(
        self, claimed: _Claimed, read_more: Callable[[int], Awaitable[list[Row[Any]]]]
    ) -> int:
        """Publish the pass's batches one after the other; the database's work overlaps: while
        a batch waits for its confirms, the next is read and the previous ones are marked (in
        the background, at most ``depth`` marks at a time; all of them are done, or failed,
        before this returns, so the next pass never reads a row of this one again)."""
        loop = asyncio.get_running_loop()
        depth = 2 if self._db.is_postgresql else 1  # SQLite has one writer at a time
        marks: list[asyncio.Task[None]] = []
        try:
            taken = await self._batches(claimed, read_more, marks, depth, loop)
        finally:
            results = await asyncio.gather(*marks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return taken

    async def _batches(
        self,
        claimed: _Claimed,
        read_more: Callable[[int], Awaitable[list[Row[Any]]]],
        marks: list[asyncio.Task[None]],
        depth: int,
        loop: asyncio.AbstractEventLoop,
    ) -> int:
        batch_size = self._options.batch_size
        raw, stopped = claimed.rows, claimed.stopped
        rows = _due_prefixes(raw, claimed.now, stopped)
        taken, batches = 0, 0
        unsettled: list[_Outcome] | None = None
        while rows or unsettled is not None:
            batches += 1
            taken += len(rows)
            publishing = loop.create_task(self._publish(rows)) if rows else None
            try:
                # The database's turn, while the broker confirms this batch: mark the last
                # one, read the next.
                if unsettled is not None:
                    while len(marks) >= depth:
                        await marks.pop(0)
                    marks.append(loop.create_task(self._mark(unsettled)))
                    unsettled = None
                more = len(raw) >= batch_size and batches < _MAX_BATCHES_PER_PASS
                raw = await read_more(raw[-1].id) if more and raw else []
            except BaseException:
                if publishing is not None:
                    publishing.cancel()
                    await asyncio.gather(publishing, return_exceptions=True)
                raise
            if publishing is None:
                break
            outcomes = await publishing
            unsettled = outcomes
            for outcome in outcomes:
                if outcome.error is not None:
                    stopped.add(outcome.row.partition_key)
            rows = _due_prefixes(raw, claimed.now, stopped)
        return taken

    async def _mark(self, outcomes: list[_Outcome]) -> None:
        if self._db.is_postgresql:
            # Each statement commits alone (one round trip, no BEGIN/COMMIT): the sent rows in
            # one UPDATE, the failed ones in another; either is correct without the other.
            async with self._db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await self._settle(conn, outcomes)
            return
        async with transaction(self._db.engine) as conn:
            await self._settle(conn, outcomes)

    async def _claim(self, conn: AsyncConnection) -> _Claimed:
        table = self._table
        now = datetime.now(UTC)
        batch = self._options.batch_size
        heads = (
            select(func.min(table.c.id).label("head"))
            .where(table.c.sent_at.is_(None))
            .group_by(table.c.partition_key)
            .subquery()
        )
        due_heads = (
            select(table.c.partition_key)
            .join(heads, heads.c.head == table.c.id)
            .where(or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now))
            .order_by(table.c.id)
            .limit(batch)
        )
        keys = list((await conn.scalars(due_heads)).all())
        await self._note_next_due(conn, now)
        locked = await self._lock.lock_partitions(conn, keys)
        if not locked:
            return _Claimed([], [], now, set())
        # Read after locking: what another relay marked sent meanwhile is not read again.
        rows = (
            await conn.execute(
                select(table)
                .where(table.c.sent_at.is_(None), table.c.partition_key.in_(locked))
                .order_by(table.c.id)
                .limit(batch)
            )
        ).all()
        return _Claimed(list(rows), locked, now, set())

    async def _read_more(
        self, conn: AsyncConnection, partitions: Sequence[str], after: int
    ) -> list[Row[Any]]:
        """The next batch of the partitions this pass holds: rows after those already taken
        (they are unsent until their marks commit). A row that becomes visible meanwhile
        with a smaller id is read by the next pass."""
        table = self._table
        result = await conn.execute(
            select(table)
            .where(
                table.c.sent_at.is_(None),
                table.c.partition_key.in_(partitions),
                table.c.id > after,
            )
            .order_by(table.c.id)
            .limit(self._options.batch_size)
        )
        return list(result.all())

    async def _note_next_due(self, conn: AsyncConnection, now: datetime) -> None:
        table = self._table
        due = await conn.scalar(
            select(func.min(table.c.next_attempt_at)).where(
                table.c.sent_at.is_(None), table.c.next_attempt_at > now
            )
        )
        if due is None:
            self._next_due = None
            return
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        self._next_due = time.monotonic() + max(0.0, (due - now).total_seconds())

    async def _publish(self, rows: list[Row[Any]]) -> list[_Outcome]:
        by_partition: dict[str, list[Row[Any]]] = {}
        for row in rows:
            by_partition.setdefault(row.partition_key, []).append(row)
        results = await asyncio.gather(*(self._publish_partition(p) for p in by_partition.values()))
        outcomes = [o for partition in results for o in partition]
        hook = faults.after_confirm
        if hook is not None:
            await hook([o.row.message_id for o in outcomes if o.error is None])
        return outcomes

    async def _publish_partition(self, rows: list[Row[Any]]) -> list[_Outcome]:
        """In order: runs of non-mandatory rows pipelined (one channel keeps their order), a
        mandatory row alone (it may be unroutable: nothing after it goes before it is
        confirmed), a row being retried alone (the rows after it go once it is confirmed, not
        again with each of its attempts), every row alone with ``strict_order``. The first
        failure ends the
        partition's turn: the rows sent after it in its run are left unsent, to be published
        again after it (they reached the broker first; their new copies come after it)."""
        outcomes: list[_Outcome] = []
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
                outcomes.append(_Outcome(row, error))
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

    async def _settle(self, conn: AsyncConnection, outcomes: list[_Outcome]) -> None:
        table = self._table
        now = datetime.now(UTC)
        sent = [o.row.id for o in outcomes if o.error is None]
        if sent:
            # One statement per batch. PostgreSQL: one array parameter, not one per row.
            ids = (
                table.c.id == func.any(bindparam("sent_ids", sent, type_=ARRAY(BigInteger)))
                if self._db.is_postgresql
                else table.c.id.in_(sent)
            )
            await conn.execute(update(table).where(ids).values(sent_at=now))
        failed = [o for o in outcomes if o.error is not None]
        if not failed:
            return
        changes = []
        for outcome in failed:
            row, error = outcome.row, outcome.error
            attempts = row.attempts + 1
            delay = _backoff(self._options, attempts)
            text = f"{type(error).__name__}: {error}"[:2000]
            changes.append(
                {
                    "row_id": row.id,
                    "attempts": attempts,
                    "due": now + timedelta(seconds=delay),
                    "error": text,
                }
            )
            log.warning(
                "%s: outbox event %s (%r, partition %r) not published, attempt %d; it holds "
                "back the later events of its partition, next attempt in %.1fs: %s",
                self._service,
                row.message_id,
                row.routing_key,
                row.partition_key,
                attempts,
                delay,
                text,
            )
        await conn.execute(
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(
                attempts=bindparam("attempts"),
                next_attempt_at=bindparam("due"),
                last_error=bindparam("error"),
            ),
            changes,
        )

    # -- PostgreSQL: LISTEN ------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wake the relay on each NOTIFY of a commit; reconnect when the listening connection
        is lost (notifications sent meanwhile are lost: a pass runs at once after, and the
        poll covers the rest)."""
        channel = notify_channel(self._table.name)
        failures = 0
        while True:
            try:
                async with self._db.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    try:
                        await driver.add_listener(channel, self._notified)
                        self._wake.set()
                        failures = 0
                        while True:  # notice a dead connection; never inside a transaction
                            await asyncio.sleep(5.0)
                            await driver.fetchval("SELECT 1")
                    finally:
                        await conn.invalidate()  # never back to the pool with a listener
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = _backoff(self._options, failures)
                log.warning(
                    "%s: outbox relay lost its LISTEN connection; polling, retrying in %.1fs",
                    self._service,
                    delay,
                    exc_info=True,
                )
                await asyncio.sleep(delay)

    def _notified(self, *_args: Any) -> None:
        self._wake.set()


def _pipelinable(row: Row[Any]) -> bool:
    return not row.mandatory and not row.attempts


def _due_prefixes(rows: Sequence[Row[Any]], now: datetime, stopped: set[str]) -> list[Row[Any]]:
    """Per partition, the rows up to the first one not yet due (in backoff): a row waiting
    for its retry holds back the later rows of its partition (added to ``stopped``), as does
    a failure earlier in the pass (already in ``stopped``)."""
    taken: list[Row[Any]] = []
    for row in rows:
        key = row.partition_key
        if key in stopped:
            continue
        due = row.next_attempt_at
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        if due is not None and due > now:
            stopped.add(key)
            continue
        taken.append(row)
    return taken


def _backoff(options: RelayOptions, attempts: int) -> float:
    delay: float = min(options.retry_max, options.retry_initial * 2.0 ** min(attempts - 1, 30))
    return delay * random.uniform(0.8, 1.0)
