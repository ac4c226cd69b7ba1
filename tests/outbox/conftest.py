"""Fixtures of the outbox and inbox tests: a database of the test's own (a fresh schema in
PostgreSQL, a fresh file for SQLite), parametrized over both, and a service with a publisher."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from amqp_events.testing._plugin import skip_or_fail

POSTGRES_URL = os.environ.get(
    "AMQP_EVENTS_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


async def _postgres_schema_engine(schema: str) -> AsyncEngine:
    admin = create_async_engine(POSTGRES_URL)
    problem = ""
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # unreachable, refused, no such database ...
        problem = f"PostgreSQL at {POSTGRES_URL} (AMQP_EVENTS_POSTGRES_URL) cannot run: {exc!r}"
    finally:
        await admin.dispose()
    if problem:
        skip_or_fail(problem)
    return create_async_engine(
        POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}}
    )


async def _drop_schema(schema: str) -> None:
    admin = create_async_engine(POSTGRES_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["postgresql", "sqlite"])
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def database_url(database_kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database of this test alone: a schema (PostgreSQL; the URL's engine
    needs ``engine_for``), or a file (SQLite)."""
    if database_kind == "sqlite":
        yield sqlite_url(tmp_path / "outbox.db")
        return
    schema = f"amqp_events_test_{uuid.uuid4().hex[:12]}"
    engine = await _postgres_schema_engine(schema)
    await engine.dispose()
    try:
        yield f"{POSTGRES_URL}#{schema}"
    finally:
        await _drop_schema(schema)


def engine_for(database_url: str) -> AsyncEngine:
    """An engine for a ``database_url`` (a PostgreSQL one carries its schema after ``#``)."""
    if "#" in database_url:
        url, schema = database_url.split("#", 1)
        return create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
    return create_async_engine(database_url)


def process_args(database_url: str) -> list[str]:
    """How a subprocess gets the database: the URL and, for PostgreSQL, its schema."""
    if "#" in database_url:
        return database_url.split("#", 1)
    return [database_url, ""]


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    made = engine_for(database_url)
    yield made
    await made.dispose()
