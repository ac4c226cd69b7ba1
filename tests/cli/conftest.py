"""Running the command line in-process, as the shell would see it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from amqp_events._cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """``main(argv)``: its exit code, stdout and stderr (argparse's exits included)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Result(code, out, err)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``cli("topology", "mod:app")`` from a sync test."""

    def call(*argv: str) -> Result:
        return run_cli(list(argv), capsys)

    return call


@pytest.fixture
def acli(capsys: pytest.CaptureFixture[str]) -> Callable[..., object]:
    """``await acli("dlq", "list", ...)`` from an async test: main() runs its own event loop,
    so it runs in a thread."""

    async def call(*argv: str) -> Result:
        return await asyncio.to_thread(run_cli, list(argv), capsys)

    return call
