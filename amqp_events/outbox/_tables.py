"""The outbox and inbox tables, as SQLAlchemy ``Table`` objects on a ``MetaData`` (the user's
own, for Alembic, or one of ours), and the JSON form of AMQP headers kept in outbox rows."""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
)

__all__ = [
    "INBOX_TABLE",
    "OUTBOX_TABLE",
    "decode_headers",
    "encode_headers",
    "inbox_table",
    "notify_channel",
    "outbox_table",
]

OUTBOX_TABLE: Final = "amqp_events_outbox"
INBOX_TABLE: Final = "amqp_events_inbox"

# SQLite's INTEGER PRIMARY KEY is its rowid; BIGINT would not be.
_ID = BigInteger().with_variant(Integer, "sqlite")


def notify_channel(table: str) -> str:
    """The PostgreSQL LISTEN/NOTIFY channel a commit of outbox rows is announced on."""
    return f"{table}_rows"


def outbox_table(metadata: MetaData, name: str = OUTBOX_TABLE) -> Table:
    """The outbox: one row per event written with ``Outbox.publish``, sent or not yet."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    table = Table(
        name,
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("message_id", String(64), nullable=False, unique=True),
        Column("partition_key", String(255), nullable=False, server_default=""),
        Column("exchange", String(255), nullable=False),
        Column("routing_key", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("mandatory", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", DateTime(timezone=True), nullable=True),
        Column("last_error", Text, nullable=True),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        sqlite_autoincrement=True,
    )
    # What the relay reads: the unsent rows of each partition in id order.
    Index(
        f"{name}_unsent",
        table.c.partition_key,
        table.c.id,
        postgresql_where=table.c.sent_at.is_(None),
        sqlite_where=table.c.sent_at.is_(None),
    )
    # What cleanup deletes: sent rows, oldest first.
    Index(
        f"{name}_sent",
        table.c.sent_at,
        postgresql_where=table.c.sent_at.is_not(None),
        sqlite_where=table.c.sent_at.is_not(None),
    )
    # PostgreSQL: a commit that wrote rows wakes the relays (NOTIFY is sent at commit, never
    # for a rolled-back transaction). One notification per statement, not per row.
    channel = notify_channel(name)
    for statement in (
        f"CREATE OR REPLACE FUNCTION {name}_notify() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$",
        f"CREATE TRIGGER {name}_notify AFTER INSERT ON {name} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_notify()",
    ):
        ddl = DDL(statement)  # type: ignore[no-untyped-call]
        event.listen(table, "after_create", ddl.execute_if(dialect="postgresql"))
    event.listen(
        table,
        "before_drop",
        DDL(f"DROP FUNCTION IF EXISTS {name}_notify() CASCADE").execute_if(  # type: ignore[no-untyped-call]
            dialect="postgresql"
        ),
    )
    return table


def inbox_table(metadata: MetaData, name: str = INBOX_TABLE) -> Table:
    """The inbox: one row per message a consumer handled, keyed by (consumer, message id)."""
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    table = Table(
        name,
        metadata,
        Column("consumer", String(255), primary_key=True),
        Column("message_id", String(255), primary_key=True),
        Column("handled_at", DateTime(timezone=True), nullable=False),
    )
    Index(f"{name}_handled_at", table.c.handled_at)
    return table


# -- headers as JSON -------------------------------------------------------------------------
# AMQP headers carry a few values JSON does not: aware datetimes and Decimals. They are kept
# tagged, so a row is published with exactly the headers it was written with.
_TAG: Final = "$amqp-events"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, bytearray):
        return {_TAG: "bytearray", "v": value.hex()}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag == "datetime":
            return datetime.datetime.fromisoformat(value["v"])
        if tag == "decimal":
            return decimal.Decimal(value["v"])
        if tag == "bytearray":
            return bytearray.fromhex(value["v"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_headers(headers: Mapping[str, Any]) -> str:
    return json.dumps(_encode(headers), separators=(",", ":"), allow_nan=False)


def decode_headers(stored: str) -> dict[str, Any]:
    if _TAG not in stored:  # the common case: nothing tagged
        plain = json.loads(stored)
        assert isinstance(plain, dict)
        return plain
    decoded = _decode(json.loads(stored))
    assert isinstance(decoded, dict)
    return decoded
