"""The relay: publishes committed outbox rows with the broker's confirm, then marks them sent.

One pass: find the partitions whose oldest unsent row is due, lock them (PostgreSQL: advisory
locks held by the pass's transaction; SQLite: one relay per database holds a file lock), read
their rows in id order, publish them (partitions side by side, each partition's rows in order),
mark the confirmed ones sent and give the failed one a later attempt, which holds back the
rest of its partition. A relay killed anywhere in a pass leaves its rows unsent, and the next
pass, of this relay or another, publishes them again with the same message id.
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

from sqlalchemy import Row, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .._envelope import Envelope
from .._errors import ConfigurationError
from .._setup import Setup, SetupBuilder
from .._transport._base import Transport
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


_NO_HEADERS: Mapping[str, Any] = MappingProxyType({})


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
) -> Setup:
    """A setup that relays ``outbox`` through this connection while it is started.

    Each pass takes up to ``batch_size`` due rows, publishes them with publisher confirms
    (pipelined) and marks them sent. It wakes when a transaction in this process commits
    events, on PostgreSQL when any does (LISTEN/NOTIFY), and at least every
    ``poll_interval`` seconds (default 1.0 on PostgreSQL, where polling is only the fallback,
    0.05 on SQLite, which has no notifications). A row the broker does not confirm is tried
    again after ``retry_backoff`` (initial, max) seconds, doubling, and holds back the later
    rows of its partition meanwhile. Rows sent more than ``retention`` ago are deleted every
    ``cleanup_interval`` seconds, in batches. Several relays (service instances) on one
    PostgreSQL database share the work by partition; on SQLite one relay at a time works.
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
        batch_size, poll_interval, initial, max(initial, maximum), retention, cleanup_interval
    )

    def setup(builder: SetupBuilder) -> None:
        relay = Relay(outbox, options, builder.service_name)
        builder._plan.transport_users.append(relay.attach)
        builder.run_while_started(f"outbox-relay:{outbox.table.name}", relay.run)

    return setup


@dataclass(slots=True)
class _Outcome:
    row: Row[Any]
    error: Exception | None


class Relay:
    """One connection's relay of one outbox."""

    def __init__(self, outbox: Outbox, options: RelayOptions, service: str) -> None:
        self._outbox = outbox
        self._db = outbox._db
        self._table = outbox.table
        self._options = options
        self._service = service
        self._transport: Transport | None = None
        self._wake = asyncio.Event()
        self._lock = self._db.relay_lock(self._table.name)
        self._next_due: float | None = None  # when a row in backoff is due (monotonic)

    def attach(self, transport: Transport) -> None:
        self._transport = transport

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
        try:
            while True:
                self._wake.clear()
                if not await self._lock.acquire_outbox():
                    await self._sleep(self._options.poll_interval)
                    continue
                try:
                    published = await self._pass()
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
        """Publish what is due; return how many rows were taken."""
        engine = self._db.engine
        if self._db.is_postgresql:
            # The advisory locks live as long as this transaction: publish and mark inside it.
            async with transaction(engine) as conn:
                rows = await self._claim(conn)
                if not rows:
                    return 0
                outcomes = await self._publish(rows)
                await self._settle(conn, outcomes)
            return len(rows)
        # SQLite: this relay alone works on the database (its file lock); short transactions,
        # so writers never wait for the broker.
        async with transaction(engine) as conn:
            rows = await self._claim(conn)
        if not rows:
            return 0
        outcomes = await self._publish(rows)
        async with transaction(engine) as conn:
            await self._settle(conn, outcomes)
        return len(rows)

    async def _claim(self, conn: AsyncConnection) -> list[Row[Any]]:
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
            return []
        # Read after locking: what another relay marked sent meanwhile is not read again.
        rows = (
            await conn.execute(
                select(table)
                .where(table.c.sent_at.is_(None), table.c.partition_key.in_(locked))
                .order_by(table.c.id)
                .limit(batch)
            )
        ).all()
        return _due_prefixes(rows, now)

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
        confirmed); after a failure, the rest of the partition waits for the next attempt."""
        outcomes: list[_Outcome] = []
        start = 0
        while start < len(rows):
            end = start + 1
            if not rows[start].mandatory:
                while end < len(rows) and not rows[end].mandatory:
                    end += 1
            run = rows[start:end]
            results = await asyncio.gather(*(self._send(r) for r in run), return_exceptions=True)
            failed = False
            for row, result in zip(run, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
                error = result if isinstance(result, Exception) else None
                outcomes.append(_Outcome(row, error))
                failed = failed or error is not None
            if failed:
                break
            start = end
        return outcomes

    async def _send(self, row: Row[Any]) -> None:
        transport = self._transport
        if transport is None:
            raise ConfigurationError("the outbox relay runs before its connection started")
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        # The stored headers (the envelope's included) travel as the envelope: the row's own
        # message id and time, and no per-id lock or header-frame check per publish, as for
        # any fresh event (the frame was checked when the row was written).
        await transport.publish(
            row.exchange,
            row.routing_key,
            row.body,
            _NO_HEADERS,
            mandatory=row.mandatory,
            envelope=Envelope(row.message_id, created, decode_headers(row.headers)),
        )

    async def _settle(self, conn: AsyncConnection, outcomes: list[_Outcome]) -> None:
        table = self._table
        now = datetime.now(UTC)
        sent = [o.row.id for o in outcomes if o.error is None]
        if sent:
            await conn.execute(update(table).where(table.c.id.in_(sent)).values(sent_at=now))
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


def _due_prefixes(rows: Sequence[Row[Any]], now: datetime) -> list[Row[Any]]:
    """Per partition, the rows up to the first one not yet due (in backoff): a row waiting
    for its retry holds back the later rows of its partition."""
    stopped: set[str] = set()
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
