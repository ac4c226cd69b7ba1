"""One pass of the relay over the outbox table: what is due, read, published and marked.

Find the partitions whose oldest unsent row is due, lock them (PostgreSQL: advisory locks held
by the pass's transaction; SQLite: one relay per database holds a file lock), read their rows in
id order a batch at a time, publish each batch (``_relay_publish``), mark the confirmed ones
sent and give the failed one a later attempt, which holds back the rest of its partition.
Batches are pipelined: the previous ones are marked and the next one read while a batch waits
for its confirms. A relay killed anywhere in a pass leaves its unmarked rows unsent, and the
next pass, of this relay or another, publishes them again with the same message id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Row, Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ._database import Database, RelayLock, transaction
from ._relay_publish import Outcome, RowPublishing

__all__ = ["RelayOptions", "RelayPasses", "backoff"]

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


# A pass reads, publishes and marks up to this many batches before it looks for newly due
# partitions again (and, on PostgreSQL, lets other relays have its partitions).
_MAX_BATCHES_PER_PASS = 20


@dataclass(slots=True)
class _Claimed:
    rows: list[Row[Any]]
    partitions: list[str]
    now: datetime
    stopped: set[str]  # partitions held back in this pass: nothing more of them is published


class RelayPasses(RowPublishing):
    """The relay's passes over its table (``Relay`` sets these up and runs them)."""

    _db: Database
    _table: Table
    _lock: RelayLock
    _next_due: float | None  # when a row in backoff is due (monotonic)

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
        unsettled: list[Outcome] | None = None
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

    async def _mark(self, outcomes: list[Outcome]) -> None:
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

    async def _settle(self, conn: AsyncConnection, outcomes: list[Outcome]) -> None:
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
            delay = backoff(self._options, attempts)
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


def backoff(options: RelayOptions, attempts: int) -> float:
    delay: float = min(options.retry_max, options.retry_initial * 2.0 ** min(attempts - 1, 30))
    return delay * random.uniform(0.8, 1.0)
