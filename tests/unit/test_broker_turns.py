"""A disruptive test takes the broker alone: it waits for every test holding it, across
processes (pytest-xdist workers, other runs); ordinary tests share it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqp_events.testing import _plugin
from amqp_events.testing._broker_turns import ENV_HOLDING, broker_turn, lock_path

pytest_plugins = ("pytester",)

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


def rest_of_output(child: subprocess.Popen[str]) -> str:
    """What the child writes after "waiting", once it exits (read through the same buffer as
    that line: communicate() with a timeout would skip what readline() read ahead)."""
    child.wait(timeout=10)
    assert child.stdout is not None
    return child.stdout.read()


def test_an_exclusive_turn_waits_until_the_shared_one_ends(own_lock: dict[str, str]) -> None:
    with broker_turn(exclusive=False):
        assert os.environ[ENV_HOLDING] == "1"
        child = start_child("exclusive", own_lock)
        time.sleep(0.5)
        assert child.poll() is None  # still waiting for the lock
    assert rest_of_output(child) == "holding\n"
    assert ENV_HOLDING not in os.environ
    assert Path(lock_path()).parent == Path(tempfile.gettempdir())


def test_shared_turns_do_not_wait_for_each_other(own_lock: dict[str, str]) -> None:
    with broker_turn(exclusive=False):
        child = start_child("shared", own_lock)
        assert rest_of_output(child) == "holding\n"


def test_a_turn_inside_a_turn_does_not_wait(own_lock: dict[str, str]) -> None:
    # pytester runs a session inside a test that holds the broker already.
    with broker_turn(exclusive=False), broker_turn(exclusive=True):
        assert os.environ[ENV_HOLDING] == "1"


TURN_TESTS = """
import pytest

@pytest.mark.alone
def test_measures_time():
    pass

@pytest.mark.disruptive
def test_restarts_the_broker():
    pass

def test_plain():
    pass
"""


@pytest.mark.parametrize("disruptive_enabled", [False, True])
def test_the_plugin_gives_alone_and_enabled_disruptive_tests_the_broker_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, disruptive_enabled: bool
) -> None:
    turns: list[tuple[str, bool]] = []

    @contextlib.contextmanager
    def recorded_turn(*, exclusive: bool) -> Iterator[None]:
        turns.append((os.environ.get("PYTEST_CURRENT_TEST", ""), exclusive))
        yield

    monkeypatch.setattr(_plugin, "broker_turn", recorded_turn)
    if disruptive_enabled:
        monkeypatch.setenv("AMQP_EVENTS_DISRUPTIVE", "1")
    else:
        monkeypatch.delenv("AMQP_EVENTS_DISRUPTIVE", raising=False)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(TURN_TESTS)

    pytester.runpytest("-p", "no:randomly").assert_outcomes(
        passed=3 if disruptive_enabled else 2, skipped=0 if disruptive_enabled else 1
    )

    assert [exclusive for _, exclusive in turns] == [True, disruptive_enabled, False]
