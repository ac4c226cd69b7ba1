"""A disruptive test takes the broker alone: it waits for every test holding it, across
processes (pytest-xdist workers, other runs); ordinary tests share it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from amqp_events.testing._broker_turns import ENV_HOLDING, broker_turn, lock_path

CHILD = """
import sys
from amqp_events.testing._broker_turns import broker_turn
print("waiting", flush=True)
with broker_turn(exclusive=sys.argv[1] == "exclusive"):
    print("holding", flush=True)
"""


@pytest.fixture
def own_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A lock file of this test alone, and the environment a child needs to use it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(ENV_HOLDING, raising=False)  # this test's own turn, under the plugin
    env = {k: v for k, v in os.environ.items() if k != ENV_HOLDING}
    env["TMPDIR"] = str(tmp_path)
    return env


def start_child(kind: str, env: dict[str, str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "waiting\n"
    return child


def test_an_exclusive_turn_waits_until_the_shared_one_ends(own_lock: dict[str, str]) -> None:
    with broker_turn(exclusive=False):
        assert os.environ[ENV_HOLDING] == "1"
        child = start_child("exclusive", own_lock)
        time.sleep(0.5)
        assert child.poll() is None  # still waiting for the lock
    assert child.communicate(timeout=10)[0] == "holding\n"
    assert ENV_HOLDING not in os.environ
    assert Path(lock_path()).parent == Path(tempfile.gettempdir())


def test_shared_turns_do_not_wait_for_each_other(own_lock: dict[str, str]) -> None:
    with broker_turn(exclusive=False):
        child = start_child("shared", own_lock)
        assert child.communicate(timeout=10)[0] == "holding\n"


def test_a_turn_inside_a_turn_does_not_wait(own_lock: dict[str, str]) -> None:
    # pytester runs a session inside a test that holds the broker already.
    with broker_turn(exclusive=False), broker_turn(exclusive=True):
        assert os.environ[ENV_HOLDING] == "1"
