"""What the repository promises about itself agrees with itself: the README's test command and
.ci/run, the extras, the license, the RabbitMQ image of docker-compose.yml and of the fixtures."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from amqp_events.testing._broker import DEFAULT_CONTAINER_IMAGE

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = {
    "ruff",
    "mypy",
    "hypothesis",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "prometheus-client",
    "jsonschema",
    "pyyaml",
    "types-jsonschema",
    "types-pyyaml",
    "watchfiles",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "pytest-xdist",
}


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None, requirement
    return match.group(0).lower()


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r'^install="(.*)"$', ci, re.M)
    run_tests = re.search(r'^run_tests="(.*)"$', ci, re.M)
    assert install is not None
    assert run_tests is not None
    assert readme[4] == f"{install.group(1)} && {run_tests.group(1)}"
    assert "'.[test,dev]'" in readme[4]  # a fresh machine gets every tool the tests need


def test_ci_lints_before_the_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("ruff check") < ci.index("mypy --strict") < ci.index('eval "$run_tests"')


def test_test_extra_is_what_a_users_tests_need_and_dev_tools_are_pinned() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert {requirement_name(r) for r in extras["test"]} == {
        "pytest",
        "pytest-asyncio",
        "testcontainers",
    }
    assert {requirement_name(r) for r in extras["dev"]} == DEV_TOOLS
    assert all("==" in r for r in extras["dev"]), extras["dev"]


def test_markers_are_strict() -> None:
    assert "--strict-markers" in pyproject()["tool"]["pytest"]["ini_options"]["addopts"]


def test_license_file_matches_pyproject() -> None:
    assert pyproject()["project"]["license"] == {"text": "MIT"}
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 the amqp-events authors\n")


def test_compose_and_the_test_container_run_the_same_rabbitmq_4() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    image = re.search(r"^\s+image:\s*(\S+)", compose, re.M)
    assert image is not None
    assert image.group(1) == DEFAULT_CONTAINER_IMAGE
    assert re.fullmatch(r"rabbitmq:4\.\d+-management", DEFAULT_CONTAINER_IMAGE)
