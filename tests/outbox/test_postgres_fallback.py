"""Which PostgreSQL the outbox tests use (conftest.choose_postgres): the configured or local
one when it answers, else a testcontainers container, else none (skip, or fail in CI). The
probes are replaced: no database and no Docker is touched."""

from __future__ import annotations

from .conftest import DEFAULT_POSTGRES_URL, choose_postgres

CONTAINER_URL = "postgresql+asyncpg://test:test@127.0.0.1:49153/test"


class Probes:
    def __init__(self, answering: set[str], container: str | Exception) -> None:
        self.answering = answering
        self.container = container
        self.probed: list[str] = []
        self.started = 0

    async def probe(self, url: str) -> str | None:
        self.probed.append(url)
        return None if url in self.answering else "ConnectionRefusedError()"

    def start(self) -> str:
        self.started += 1
        if isinstance(self.container, Exception):
            raise self.container
        return self.container


async def test_a_local_postgresql_that_answers_is_used_and_no_container_started() -> None:
    probes = Probes({DEFAULT_POSTGRES_URL}, CONTAINER_URL)
    assert await choose_postgres(None, probes.probe, probes.start) == (DEFAULT_POSTGRES_URL, "")
    assert probes.started == 0


async def test_the_configured_url_is_used_when_it_answers() -> None:
    url = "postgresql+asyncpg://app@db:5432/app"
    probes = Probes({url}, CONTAINER_URL)
    assert await choose_postgres(url, probes.probe, probes.start) == (url, "")
    assert probes.probed == [url]
    assert probes.started == 0


async def test_a_container_is_started_when_no_postgresql_answers() -> None:
    probes = Probes({CONTAINER_URL}, CONTAINER_URL)
    assert await choose_postgres(None, probes.probe, probes.start) == (CONTAINER_URL, "")
    assert probes.probed == [DEFAULT_POSTGRES_URL, CONTAINER_URL]
    assert probes.started == 1


async def test_without_postgresql_or_docker_there_is_no_url_and_the_reason_says_both() -> None:
    probes = Probes(set(), RuntimeError("Error while fetching server API version"))
    url, problem = await choose_postgres(None, probes.probe, probes.start)
    assert url is None
    assert DEFAULT_POSTGRES_URL in problem
    assert "ConnectionRefusedError" in problem
    assert "testcontainers" in problem
    assert "server API version" in problem


async def test_a_container_that_does_not_answer_gives_no_url() -> None:
    probes = Probes(set(), CONTAINER_URL)
    url, problem = await choose_postgres(None, probes.probe, probes.start)
    assert url is None
    assert "container does not answer" in problem
