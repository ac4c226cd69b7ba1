"""The amqp-events command: its version, plain help, and an error naming each bad input."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest

import amqp_events
from amqp_events._cli import main

# ``literal``, :role:`target`, `text <link>`_: reST that a docstring would leak into --help.
REST_MARKUP = re.compile(r"``|:[a-z]+:`|`_\b")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """main(argv) as the shell sees it: its exit code, stdout and stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits for --help, --version and usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_version_is_the_installed_distributions() -> None:
    assert amqp_events.__version__ == version("amqp-events")
    assert "__version__" not in amqp_events.__all__


def test_version_option_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"amqp-events {amqp_events.__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["demo", "--help"],
        ["run", "--help"],
        ["topology", "--help"],
        ["asyncapi", "--help"],
        ["check", "--help"],
        ["dlq", "--help"],
        ["dlq", "list", "--help"],
        ["dlq", "show", "--help"],
        ["dlq", "replay", "--help"],
        ["dlq", "purge", "--help"],
    ],
)
def test_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert out.startswith("usage: amqp-events")
    assert REST_MARKUP.search(out) is None, out


def test_demo_with_no_orders_is_a_run_that_sends_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)
    code, out, err = run(["demo", "--orders", "0"], capsys)
    assert (code, err) == (0, "")
    assert "demo: broker memory://" in out
    assert "no orders to send" in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "COMMAND"),
        (["serve"], "'serve'"),
        (["demo", "--orders", "-1"], "--orders: must be 0 or more, got -1"),
        (["demo", "--orders", "three"], "--orders: must be a whole number, got 'three'"),
        (["demo", "--url", "http://b"], "--url: broker URL 'http://b' has unknown scheme"),
        (["demo", "--color"], "unrecognized arguments: --color"),
        (["topology"], "the following arguments are required: APP"),
        (["topology", "m:a", "--format", "svg"], "invalid choice: 'svg'"),
        (["dlq", "list"], "the following arguments are required: QUEUE"),
        (["dlq", "list", "q", "--limit", "0"], "--limit: must be 1 or more, got 0"),
        (["dlq", "replay", "q", "--to", "everywhere"], "invalid choice: 'everywhere'"),
        (["run", "m:a", "--workers", "two"], "--workers: must be a whole number, got 'two'"),
    ],
)
def test_bad_input_is_refused_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert named in err


def test_a_bad_amqp_url_is_reported_as_coming_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://guest:secret@broker:notaport/")
    code, out, err = run(["demo"], capsys)
    assert code == 2
    assert out == ""
    assert "AMQP_URL: " in err
    assert "secret" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "tests.cli.apps.ledger:make_ledger"],
        ["dlq", "list", "some-queue"],
    ],
)
def test_broker_commands_need_a_url(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert "no broker: pass --url amqp://user:password@host/vhost" in err
    assert err.count("\n") == 1
