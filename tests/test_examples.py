"""The demo and the README's examples run as written, on both brokers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amqp_events._cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, url: str) -> subprocess.CompletedProcess[str]:
    """``python examples/<name>`` with ``AMQP_URL`` set to ``url``, as the README says."""
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AMQP_URL": url},
        check=False,
    )


def test_demo_cli(amqp_events_broker_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", amqp_events_broker_url]) == 0
    out = capsys.readouterr().out
    assert out.count("[stat-service] Order.Created") == 3
    assert out.count("[shipping-service] Order.Created") == 3
    assert out.count("[shipping-service] Order.Updated") == 3
    assert "[stat-service] Order.Updated" not in out  # stat consumes Order.Created only
    assert "every event arrived (9 deliveries)" in out


def test_demo_as_module_on_memory_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "amqp_events", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "demo: broker memory://" in result.stdout


def test_quickstart_runs(amqp_events_broker_url: str) -> None:
    result = run_example("quickstart.py", amqp_events_broker_url)
    assert result.returncode == 0, result.stderr
    assert "order 1 from order-service" in result.stdout


def test_readme_quickstart_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```python\n(.*?)```", readme, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / "quickstart.py").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[3] == (
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/amqp-events demo"
    )
    # .ci/run checks that it runs exactly this line (tests/unit/test_packaging.py too).
    assert lines[4] == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test,dev]' && .venv/bin/pytest"
    )


def test_request_response_example_runs(amqp_events_broker_url: str) -> None:
    result = run_example("request_response.py", amqp_events_broker_url)
    assert result.returncode == 0, result.stderr
    assert "awaited: item='tea' total=6" in result.stdout
    assert "remote error: ValueError cannot price 0 of tea" in result.stdout
    assert "handled: item='cake' total=3" in result.stdout


def test_testing_docs_show_the_example_that_runs() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text()
    block = re.search(r"## The three ways, as tests.*?```python\n(.*?)```", doc, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / "testing" / "test_shipping.py").read_text()


def test_goamqp_port_runs(amqp_events_broker_url: str) -> None:
    result = run_example("goamqp_port.py", amqp_events_broker_url)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "Increasing order count",
        "Order created",
        "Order updated",
    ]


def test_porting_doc_shows_the_example_that_runs() -> None:
    doc = (ROOT / "docs" / "porting-from-goamqp.md").read_text()
    block = re.search(r"The whole port is.*?```python\n(.*?)```", doc, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples" / "goamqp_port.py").read_text()
