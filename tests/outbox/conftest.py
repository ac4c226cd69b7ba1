"""Fixtures of the outbox and inbox tests: a database of the test's own (a fresh schema in
PostgreSQL, a fresh file for SQLite), parametrized over both, and a service with a publisher.

PostgreSQL is ``AMQP_EVENTS_POSTGRES_URL``, else the local server; when that does not answer,
a throw-away container started with testcontainers (needs Docker), stopped at exit; and only
when that fails too are the PostgreSQL tests skipped (failed under
``AMQP_EVENTS_REQUIRE_BROKER=1``)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from amqp_events.testing._plugin import skip_or_fail

ENV_POSTGRES_URL = "AMQP_EVENTS_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
POSTGRES_IMAGE = "postgres:15-alpine"
# What this session found: (url, why there is none); resolved once, by the first test.
_found: tuple[str | None, str] | None = None


async def probe_postgres(url: str) -> str | None:
    """None if PostgreSQL at ``url`` answers a query, else why not."""
    engine = create_async_engine(url, connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # unreachable, refused, no such database ...
        return repr(exc)
    finally:
        await engine.dispose()
    return None


def start_postgres_container() -> str:
    """Start a PostgreSQL container with testcontainers (stopped at exit); its asyncpg URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before 4.15 kept it at the top level
            from testcontainers.postgres import PostgresContainer
    container: Any = PostgresContainer(POSTGRES_IMAGE, driver="asyncpg")
    container.start()

    def stop() -> None:
        with contextlib.suppress(Exception):  # the session is over: never mask its result
            container.stop()

    atexit.register(stop)
    return str(container.get_connection_url())


async def choose_postgres(
    env_url: str | None,
    probe: Callable[[str], Awaitable[str | None]] = probe_postgres,
    start_container: Callable[[], str] = start_postgres_container,
) -> tuple[str | None, str]:
    """The PostgreSQL URL for the tests, or None and why: ``env_url`` (the environment's
    AMQP_EVENTS_POSTGRES_URL) else the local server, if it answers; else a testcontainers
    container, if one starts and answers."""
    url = env_url or DEFAULT_POSTGRES_URL
    problem = await probe(url)
    if problem is None:
        return url, ""
    where = f"PostgreSQL at {url} ({ENV_POSTGRES_URL}) cannot run: {problem}"
    try:
        container_url = await asyncio.to_thread(start_container)
    except Exception as exc:  # no testcontainers, no Docker, no image ...
        return None, f"{where}; nor a container with testcontainers (needs Docker): {exc!r}"
    problem = await probe(container_url)
    if problem is not None:
        return None, f"{where}; the testcontainers container does not answer: {problem}"
    return container_url, ""


async def postgres_url() -> str:
    """This session's PostgreSQL URL; skips (fails under AMQP_EVENTS_REQUIRE_BROKER=1)
    without one."""
    global _found
    if _found is None:
        _found = await choose_postgres(os.environ.get(ENV_POSTGRES_URL))
    url, problem = _found
    if url is None:
        skip_or_fail(problem)
    return url


async def _postgres_schema_engine(schema: str) -> AsyncEngine:
    url = await postgres_url()
    admin = create_async_engine(url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        await admin.dispose()
    return create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})


async def _drop_schema(schema: str) -> None:
    admin = create_async_engine(await postgres_url())
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
        yield f"{await postgres_url()}#{schema}"
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
