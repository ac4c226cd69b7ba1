"""What differs between PostgreSQL and SQLite, in one place: SQLite's settings (WAL, a busy
timeout, ``BEGIN IMMEDIATE``), the dialect-specific insert that ignores duplicates, and the
lock that lets one relay at a time publish a partition."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.schema import Table

from .._errors import ConfigurationError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: relays of one process only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "Database",
]

log = logging.getLogger(__name__)

# How long an SQLite writer waits for another's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS: Final = 60_000
_configured: weakref.WeakSet[Any] = weakref.WeakSet()


class Database:
    """An engine as the outbox and inbox use it: PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

    __slots__ = ("engine", "is_postgresql", "is_sqlite")

    def __init__(self, engine: AsyncEngine) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"the outbox and inbox take a SQLAlchemy AsyncEngine (create_async_engine(...)), "
                f"got {engine!r}"
            )
        name = engine.dialect.name
        if name not in ("postgresql", "sqlite"):
            raise ConfigurationError(
                f"the outbox and inbox support PostgreSQL (postgresql+asyncpg://) and SQLite "
                f"(sqlite+aiosqlite://), not {name!r}"
            )
        self.engine = engine
        self.is_postgresql = name == "postgresql"
        self.is_sqlite = name == "sqlite"
        if self.is_sqlite:
            configure_sqlite(engine)

    def insert_ignoring_duplicates(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING``: its rowcount says whether the row is new."""
        if self.is_postgresql:
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    def relay_lock(self, table: str) -> RelayLock:
        if self.is_postgresql:
            return PartitionLocks(table)
        return WholeOutboxLock(self.engine, table)


def configure_sqlite(engine: AsyncEngine) -> None:
    """WAL (readers never wait for the writer), a long busy timeout, and ``BEGIN IMMEDIATE``
    for every transaction, so a writer waits for the lock up front instead of failing with
    "database is locked" when a deferred transaction tries to upgrade its read lock.

    Applied once per engine; it also affects the user's own sessions on it, on purpose: that
    is what keeps "database is locked" from escaping to them.
    """
    sync_engine = engine.sync_engine
    if sync_engine in _configured:
        return
    _configured.add(sync_engine)

    def configure(dbapi_connection: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if not _is_memory(engine):
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        configure(dbapi_connection)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: SyncConnection) -> None:
        dbapi_connection = connection.connection.dbapi_connection
        if dbapi_connection is not None and dbapi_connection.isolation_level is not None:
            configure(dbapi_connection)  # pooled before the outbox or inbox was made
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _is_memory(engine: AsyncEngine) -> bool:
    database = engine.url.database
    return not database or database == ":memory:" or database.startswith("file::memory:")


class RelayLock:
    """Who may publish which partitions right now."""

    async def acquire_outbox(self) -> bool:
        """Whether this relay may publish at all (SQLite: one relay per database)."""
        return True

    def release_outbox(self) -> None:
        return None

    async def lock_partitions(self, conn: AsyncConnection, keys: Sequence[str]) -> list[str]:
        """Lock ``keys`` for the transaction of ``conn``; return those this relay got."""
        return list(keys)


class PartitionLocks(RelayLock):
    """PostgreSQL: a transaction-scoped advisory lock per partition, taken with ``try`` (a
    partition another relay holds is skipped, not waited for) and held while its rows are
    published and marked; released by the commit, or by the server when the relay's
    connection dies, so a killed relay holds nothing back."""

    def __init__(self, table: str) -> None:
        # Lock keys are (class, hashtext(partition)); the class names the table. Two
        # partitions with one hash only share a lock: they are published by one relay.
        self._class = zlib.crc32(table.encode()) & 0x7FFFFFFF

    async def lock_partitions(self, conn: AsyncConnection, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        result = await conn.execute(
            text(
                "SELECT k FROM unnest(CAST(:keys AS text[])) AS k "
                "WHERE pg_try_advisory_xact_lock(:class, hashtext(k))"
            ),
            {"keys": list(keys), "class": self._class},
        )
        return [row[0] for row in result]


_process_locks: dict[str, asyncio.Lock] = {}


class WholeOutboxLock(RelayLock):
    """SQLite: one relay per database publishes, the others stand by. Across processes an
    exclusive ``flock`` on ``<database>.<table>.relay-lock``, which the operating system
    releases when its process dies (a killed relay holds nothing back); for an in-memory
    database, a lock of this process."""

    def __init__(self, engine: AsyncEngine, table: str) -> None:
        database = engine.url.database or ""
        self._path = (
            None if _is_memory(engine) else f"{os.path.abspath(database)}.{table}.relay-lock"
        )
        self._key = self._path or f"{engine.url}#{table}#{id(engine)}"
        self._fd: int | None = None
        self._held = False

    async def acquire_outbox(self) -> bool:
        if self._held:
            return True
        if self._path is not None and fcntl is not None:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._fd = fd
        else:
            lock = _process_locks.setdefault(self._key, asyncio.Lock())
            if lock.locked():
                return False
            await lock.acquire()
        self._held = True
        log.debug("outbox relay: holds %s", self._path or "the in-memory database")
        return True

    def release_outbox(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        else:
            _process_locks[self._key].release()


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn, conn.begin():
        yield conn
