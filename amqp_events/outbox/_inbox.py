"""``Inbox``: a handler's database writes and the record that it handled a message commit in
one transaction, so a redelivered message (same message id, same consumer) changes nothing."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import MetaData, Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .._errors import ConfigurationError
from .._handlers import handler_name
from .._headers import Headers
from .._setup import Setup, SetupBuilder
from ._database import Database, transaction
from ._tables import INBOX_TABLE, inbox_table

__all__ = ["Inbox", "inbox_cleanup"]

log = logging.getLogger(__name__)


class Inbox:
    """An idempotent inbox on a SQLAlchemy async engine (PostgreSQL or SQLite).

    ``@inbox.idempotent`` turns ``async def h(event: T, session: AsyncSession)`` (or
    ``(event, session, headers)``) into a handler: it runs in a transaction that also records
    (consumer, message id), commits after it returns and before the ack, and rolls back both
    when it raises. A message already recorded for that consumer is acked without running the
    handler. A message without a message id (goamqp sends none) is handled without
    de-duplication.
    """

    __slots__ = ("_db", "_metadata", "_sessions", "_table")

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        metadata: MetaData | None = None,
        table_name: str = INBOX_TABLE,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._db = Database(engine)
        self._metadata = metadata if metadata is not None else MetaData()
        self._table = inbox_table(self._metadata, table_name)
        self._sessions = sessionmaker or async_sessionmaker(engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Inbox({self._table.name!r}, {self._db.engine.url.render_as_string()!r})"

    @property
    def metadata(self) -> MetaData:
        """The ``MetaData`` holding the inbox table, for ``create_all`` or Alembic."""
        return self._metadata

    @property
    def table(self) -> Table:
        """The inbox table."""
        return self._table

    async def create_tables(self) -> None:
        """Create the inbox table and its index if they do not exist."""
        async with self._db.engine.begin() as conn:
            await conn.run_sync(self._metadata.create_all, tables=[self._table])

    def idempotent(
        self,
        handler: Callable[..., Awaitable[None]] | None = None,
        /,
        *,
        consumer: str | None = None,
    ) -> Callable[..., Any]:
        """Decorate ``handler(event, session)`` or ``handler(event, session, headers)``.

        ``consumer`` names the handler in the inbox (default: its module and qualified name);
        two handlers of one message each run once. Use it as ``@inbox.idempotent`` or
        ``@inbox.idempotent(consumer="billing.reserve")``, under the consumer decorator.
        """
        if handler is None:
            return lambda h: self._wrap(h, consumer)
        return self._wrap(handler, consumer)

    def _wrap(
        self, handler: Callable[..., Awaitable[None]], consumer: str | None
    ) -> Callable[..., Awaitable[None]]:
        name = handler_name(handler)
        if not inspect.iscoroutinefunction(handler):
            raise ConfigurationError(f"@inbox.idempotent: {name} must be an async function")
        params = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(params) not in (2, 3):
            raise ConfigurationError(
                f"@inbox.idempotent: {name} takes {len(params)} arguments; it must take "
                "(event, session) or (event, session, headers)"
            )
        takes_headers = len(params) == 3
        key = consumer or f"{getattr(handler, '__module__', '?')}.{name}"
        if len(key) > 255:
            raise ConfigurationError(f"@inbox.idempotent: consumer name over 255 chars: {key!r}")
        table = self._table
        sessions = self._sessions
        record = self._db.insert_ignoring_duplicates(table)

        @functools.wraps(handler)
        async def idempotent_handler(event: Any, headers: Headers) -> None:
            message_id = headers.metadata.message_id
            async with sessions() as session, session.begin():
                if message_id is not None:
                    inserted = await session.execute(
                        record.values(
                            consumer=key, message_id=message_id, handled_at=datetime.now(UTC)
                        )
                    )
                    if inserted.rowcount == 0:  # type: ignore[attr-defined]
                        log.debug("inbox %s: %s already handled %s", table.name, key, message_id)
                        return
                if takes_headers:
                    await handler(event, session, headers)
                else:
                    await handler(event, session)

        # What the consumer's resolver reads: (event: <the handler's annotation>, headers).
        # get_type_hints follows __wrapped__ to the handler's module for string annotations.
        event_parameter = params[0]
        idempotent_handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                event_parameter.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD),
                inspect.Parameter(
                    "headers", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Headers
                ),
            ],
            return_annotation=None,
        )
        annotations: dict[str, Any] = {"headers": Headers, "return": None}
        raw = getattr(handler, "__annotations__", {}).get(event_parameter.name)
        if raw is not None:
            annotations[event_parameter.name] = raw
        idempotent_handler.__annotations__ = annotations
        return idempotent_handler

    async def handled(self, message_id: str, *, consumer: str) -> bool:
        """Whether ``consumer`` has handled ``message_id`` (its record is still kept)."""
        table = self._table
        async with transaction(self._db.engine) as conn:
            found = await conn.scalar(
                select(table.c.message_id).where(
                    table.c.consumer == consumer, table.c.message_id == message_id
                )
            )
        return found is not None

    async def cleanup(
        self, *, retention: timedelta = timedelta(days=7), batch_size: int = 1000
    ) -> int:
        """Delete records older than ``retention``, ``batch_size`` at a time, each batch in a
        short transaction of its own; return how many were deleted. A message redelivered
        after its record was deleted runs its handler again: keep ``retention`` longer than
        any redelivery, retry or dead-letter replay may take."""
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        table = self._table
        cutoff = datetime.now(UTC) - retention
        victims = (
            select(table.c.consumer, table.c.message_id)
            .where(table.c.handled_at < cutoff)
            .order_by(table.c.handled_at)
            .limit(batch_size)
        )
        if self._db.is_postgresql:
            victims = victims.with_for_update(skip_locked=True)
        statement = delete(table).where(tuple_(table.c.consumer, table.c.message_id).in_(victims))
        deleted = 0
        while True:
            async with transaction(self._db.engine) as conn:
                count = (await conn.execute(statement)).rowcount
            deleted += count
            if count < batch_size:
                break
        if deleted:
            log.debug("inbox %s: deleted %d old records", table.name, deleted)
        return deleted


def inbox_cleanup(
    inbox: Inbox, *, retention: timedelta = timedelta(days=7), interval: float = 60.0
) -> Setup:
    """A setup that runs ``inbox.cleanup(retention=...)`` every ``interval`` seconds while the
    connection is started, so the inbox stays bounded under steady load."""
    if not isinstance(inbox, Inbox):
        raise ConfigurationError(f"inbox_cleanup takes an Inbox, got {inbox!r}")
    if not interval > 0:
        raise ConfigurationError(f"inbox_cleanup: interval must be positive, got {interval!r}")

    async def clean_forever() -> None:
        while True:
            try:
                await inbox.cleanup(retention=retention)
            except Exception:
                log.warning(
                    "inbox cleanup of %s failed; trying again later",
                    inbox.table.name,
                    exc_info=True,
                )
            await asyncio.sleep(interval)

    def setup(builder: SetupBuilder) -> None:
        builder.run_while_started(f"inbox-cleanup:{inbox.table.name}", clean_forever)

    return setup
