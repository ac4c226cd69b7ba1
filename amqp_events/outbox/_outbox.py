"""``Outbox``: events written in the caller's own database transaction, published after it
commits by the relay (``_relay``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import MetaData, Table, and_, delete, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .._errors import ConfigurationError
from .._publisher import Publisher
from .._transport._base import OutgoingProperties
from .._transport._wire import check_header_frame
from ._database import Database, transaction
from ._tables import OUTBOX_TABLE, encode_headers, outbox_table

__all__ = ["BlockedPartition", "Outbox"]

log = logging.getLogger(__name__)

MAX_PARTITION_KEY_CHARS = 255


@dataclass(frozen=True, slots=True)
class BlockedPartition:
    """A partition whose oldest unsent event failed to publish: the relay retries it with
    backoff and holds back the later events of that partition (and only those) meanwhile."""

    partition_key: str  # "" for events written without one
    message_id: str  # of the event at the head, the one that failed
    routing_key: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    waiting: int  # unsent events in the partition, the head included


class Outbox:
    """A transactional outbox on a SQLAlchemy async engine (PostgreSQL or SQLite).

    ``await outbox.publish(session, publisher, event)`` writes the event into the caller's
    transaction; the ``outbox_relay(outbox)`` setup publishes it once that transaction has
    committed, with the broker's confirm, then marks it sent. A rolled-back transaction
    publishes nothing. ``metadata`` holds the table (for Alembic); ``create_tables()`` makes
    it. Pass ``metadata=`` to put the table on your own ``MetaData``.
    """

    __slots__ = ("_db", "_metadata", "_table", "_waiters", "_wake_key")

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        metadata: MetaData | None = None,
        table_name: str = OUTBOX_TABLE,
    ) -> None:
        self._db = Database(engine)
        self._metadata = metadata if metadata is not None else MetaData()
        self._table = outbox_table(self._metadata, table_name)
        self._waiters: set[asyncio.Event] = set()
        self._wake_key = f"amqp_events_outbox_wake:{table_name}:{id(self)}"

    def __repr__(self) -> str:
        return f"Outbox({self._table.name!r}, {self._db.engine.url.render_as_string()!r})"

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    @property
    def metadata(self) -> MetaData:
        """The ``MetaData`` holding the outbox table, for ``create_all`` or Alembic."""
        return self._metadata

    @property
    def table(self) -> Table:
        """The outbox table."""
        return self._table

    async def create_tables(self) -> None:
        """Create the outbox table, its indexes (and on PostgreSQL the trigger that wakes the
        relays at commit) if they do not exist."""
        async with self._db.engine.begin() as conn:
            await conn.run_sync(self._metadata.create_all, tables=[self._table])

    async def publish(
        self,
        session: AsyncSession,
        publisher: Publisher,
        event: BaseModel,
        headers: Mapping[str, Any] | None = None,
        *,
        mandatory: bool | None = None,
        partition_key: str | None = None,
    ) -> str:
        """Write ``event`` into ``session``'s transaction, to be published by the relay once it
        commits, exactly as ``publisher.publish(event, headers, mandatory=...)`` would send it.

        Returns its message id (the AMQP ``message_id``, kept on every republish). No broker
        I/O, no flush, no commit: the row is written with the caller's transaction or not at
        all. Raises ``ConfigurationError`` for a type without a route or a bad header, and
        ``PublishError`` for headers too large for the broker's frame. ``partition_key``
        orders events: those of one key are published in commit order, and one that cannot be
        published holds back the later ones of its key only; without a key the event is in
        the one default partition. ``publisher`` must be set up on a
        started connection (its routes, exchange and service name make the message).
        """
        if not isinstance(session, AsyncSession):
            raise ConfigurationError(
                f"Outbox.publish takes the caller's AsyncSession first, got {session!r}"
            )
        key = _checked_partition_key(partition_key)
        prepared = publisher._prepare(event, headers)
        target = publisher._require_target()
        instrument = target.observers.instrument
        stored = prepared.headers if instrument is None else instrument.deferred(prepared.headers)
        # The relay publishes the stored headers unchecked: a header frame too large for the
        # broker is refused here, at write time, not after the commit.
        check_header_frame(
            prepared.exchange,
            prepared.routing_key,
            stored,
            OutgoingProperties(message_id=prepared.message_id, timestamp=prepared.timestamp),
            target.transport.frame_max,
        )
        await session.execute(
            self._table.insert().values(
                message_id=prepared.message_id,
                partition_key=key,
                exchange=prepared.exchange,
                routing_key=prepared.routing_key,
                body=prepared.body,
                headers=encode_headers(stored),
                mandatory=prepared.mandatory if mandatory is None else bool(mandatory),
                created_at=prepared.timestamp,
                attempts=0,
            )
        )
        self._wake_after_commit(session)
        return prepared.message_id

    def _wake_after_commit(self, session: AsyncSession) -> None:
        """Relays of this process start at once when the transaction commits (PostgreSQL's
        NOTIFY wakes those of other processes; SQLite's poll)."""
        sync_session = session.sync_session
        if sync_session.info.get(self._wake_key):
            return
        sync_session.info[self._wake_key] = True

        def after_commit(committed: Any) -> None:
            committed.info.pop(self._wake_key, None)
            self._wake_relays()

        event.listen(sync_session, "after_commit", after_commit, once=True)

    def _wake_relays(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def pending(self) -> int:
        """How many events are written and not yet sent."""
        table = self._table
        async with transaction(self._db.engine) as conn:
            count = await conn.scalar(
                select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
            )
        return int(count or 0)

    async def _pending_and_blocked(self) -> tuple[int, int]:
        """How many rows are unsent, and how many partitions a failed head holds back: what
        the relay's gauges show."""
        table = self._table
        earlier = table.alias("earlier")
        is_head = ~(
            select(earlier.c.id)
            .where(earlier.c.partition_key == table.c.partition_key)
            .where(earlier.c.sent_at.is_(None))
            .where(earlier.c.id < table.c.id)
            .exists()
        )
        async with transaction(self._db.engine) as conn:
            pending = await conn.scalar(
                select(func.count()).select_from(table).where(table.c.sent_at.is_(None))
            )
            blocked = await conn.scalar(
                select(func.count())
                .select_from(table)
                .where(table.c.sent_at.is_(None), table.c.attempts > 0, is_head)
            )
        return int(pending or 0), int(blocked or 0)

    async def blocked_partitions(self) -> list[BlockedPartition]:
        """The partitions held back by an event that failed to publish, oldest first: what
        to look at when events of a key stop arriving (the relay logs each failure too)."""
        table = self._table
        earlier = table.alias("earlier")
        waiting = (
            select(func.count())
            .select_from(earlier)
            .where(and_(earlier.c.partition_key == table.c.partition_key))
            .where(earlier.c.sent_at.is_(None))
            .scalar_subquery()
        )
        is_head = ~(
            select(earlier.c.id)
            .where(earlier.c.partition_key == table.c.partition_key)
            .where(earlier.c.sent_at.is_(None))
            .where(earlier.c.id < table.c.id)
            .exists()
        )
        query = (
            select(
                table.c.partition_key,
                table.c.message_id,
                table.c.routing_key,
                table.c.attempts,
                table.c.last_error,
                table.c.next_attempt_at,
                waiting,
            )
            .where(table.c.sent_at.is_(None), table.c.attempts > 0, is_head)
            .order_by(table.c.id)
        )
        async with transaction(self._db.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [
            BlockedPartition(
                partition_key=row[0],
                message_id=row[1],
                routing_key=row[2],
                attempts=row[3],
                last_error=row[4],
                next_attempt_at=_aware(row[5]),
                waiting=int(row[6]),
            )
            for row in rows
        ]

    async def cleanup(
        self, *, retention: timedelta = timedelta(hours=1), batch_size: int = 1000
    ) -> int:
        """Delete rows sent more than ``retention`` ago, ``batch_size`` at a time, each batch
        in a short transaction of its own (no long lock); return how many were deleted. The
        relay runs it periodically; unsent rows are never deleted."""
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        table = self._table
        cutoff = datetime.now(UTC) - retention
        victims = (
            select(table.c.id)
            .where(table.c.sent_at.is_not(None), table.c.sent_at < cutoff)
            .order_by(table.c.sent_at)
            .limit(batch_size)
        )
        if self._db.is_postgresql:
            victims = victims.with_for_update(skip_locked=True)
        statement = delete(table).where(table.c.id.in_(victims.scalar_subquery()))
        deleted = 0
        while True:
            async with transaction(self._db.engine) as conn:
                count = (await conn.execute(statement)).rowcount
            deleted += count
            if count < batch_size:
                break
        if deleted:
            log.debug("outbox %s: deleted %d sent rows", table.name, deleted)
        return deleted


def _checked_partition_key(partition_key: str | None) -> str:
    if partition_key is None:
        return ""
    if not isinstance(partition_key, str) or len(partition_key) > MAX_PARTITION_KEY_CHARS:
        raise ConfigurationError(
            f"partition_key must be a str of at most {MAX_PARTITION_KEY_CHARS} characters, got "
            f"{partition_key!r}"
        )
    return partition_key


def _aware(when: datetime | None) -> datetime | None:
    """SQLite gives datetimes back naive; every time we store is UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)
