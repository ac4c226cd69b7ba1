"""``amqp-events check``: the broker against what a service declares, creating nothing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import aio_pika
import pytest

from .apps import ledger
from .apps.ledger import DLQ, QUEUE
from .conftest import Result

Cli = Callable[..., Awaitable[Result]]
APP = "tests.cli.apps.ledger:make_ledger"


async def test_missing_then_ok_then_a_mismatch_named(
    amqp_events_rabbitmq_vhost_url: str, acli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = amqp_events_rabbitmq_vhost_url
    monkeypatch.delenv("AMQP_URL", raising=False)

    missing = await acli("check", APP, "--url", url)
    assert missing.code == 1
    assert missing.out.startswith("broker amqp://guest:***@")
    assert "reachable (RabbitMQ 3." in missing.out.splitlines()[0]
    rows = {line.split()[1]: line.split()[2] for line in missing.out.splitlines()[2:-1]}
    assert rows["events.topic.exchange"] == "missing"
    assert rows[QUEUE] == "missing"
    assert rows[DLQ] == "missing"
    assert missing.out.splitlines()[-1] == "ledger-service: 3 problem(s)"

    monkeypatch.setenv("AMQP_URL", url)
    service = ledger.make_ledger()
    await service.start()
    await service.close()
    ok = await acli("check", APP, "--url", url, "--json")
    assert ok.code == 0, ok.out
    report = json.loads(ok.out)
    assert report["ok"] is True
    assert {(r["kind"], r["name"], r["status"]) for r in report["results"]} == {
        ("exchange", "events.topic.exchange", "ok"),
        ("queue", QUEUE, "ok"),
        ("queue", DLQ, "ok"),
        ("bindings", "1 binding(s)", "skipped"),
    }

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)
        await channel.declare_queue(QUEUE, durable=True, arguments={"x-max-length": 10})
    mismatch = await acli("check", APP, "--url", url)
    assert mismatch.code == 1
    [row] = [line for line in mismatch.out.splitlines() if line.split()[:2] == ["queue", QUEUE]]
    assert "mismatch" in row
    assert f"inequivalent arg 'x-expires' for queue '{QUEUE}'" in row


async def test_an_unreachable_broker_is_exit_3(acli: Cli) -> None:
    result = await acli("check", APP, "--url", "amqp://guest:guest@127.0.0.1:1/")
    assert result.code == 3
    assert result.err.startswith("amqp-events check: error: cannot reach the broker at ")
    assert result.err.count("\n") == 1
