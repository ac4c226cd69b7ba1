"""``amqp-events dlq``: dead letters of a failing handler listed, shown, replayed into the fixed
handler, and purged, on the real broker; nothing lost on the way."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import aio_pika
import pytest

from amqp_events.testing import capture

from .apps import ledger
from .apps.ledger import DLQ, QUEUE, EntryPosted
from .conftest import Result

Cli = Callable[..., Awaitable[Result]]


async def depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


@pytest.fixture
async def filled(amqp_events_rabbitmq_vhost_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Three entries dead-lettered by the failing handler; the ledger service stopped."""
    url = amqp_events_rabbitmq_vhost_url
    monkeypatch.setenv("AMQP_URL", url)
    monkeypatch.setitem(ledger.FAIL, "on", True)
    ledger.HANDLED.clear()
    failing = ledger.make_ledger()
    poster, publisher = ledger.make_poster()
    await failing.start()
    await poster.start()
    async with poster, failing, capture(failing) as outcome:
        for i in range(3):
            await publisher.publish(EntryPosted(id=f"e{i}", cents=i), {"tenant": "acme"})
    assert [d.reason for d in outcome.dead_lettered] == ["handler-failed"] * 3
    assert await depth(url, DLQ) == 3
    return url


async def test_list_shows_reason_exception_attempts_and_age(filled: str, acli: Cli) -> None:
    result = await acli("dlq", "list", QUEUE, "--url", filled)
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0] == f"{DLQ}: 3 message(s), 3 shown"
    assert lines[1].split()[:4] == ["#", "AGE", "REASON", "ATTEMPT"]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all(row[2:4] == ["handler-failed", "1"] for row in rows)
    assert all("ValueError:" in line and "Entry.Posted" in line for line in lines[2:])
    assert await depth(filled, DLQ) == 3  # listing takes nothing away

    as_json = await acli("dlq", "list", DLQ, "--url", filled, "--json", "--limit", "2")
    data = json.loads(as_json.out)
    assert data["queue"] == DLQ
    assert data["message_count"] == 3
    letters = data["dead_letters"]
    assert [d["position"] for d in letters] == [1, 2]
    first = letters[0]
    assert (first["reason"], first["exception_type"], first["attempt"]) == (
        "handler-failed",
        "ValueError",
        1,
    )
    assert first["exception_message"] == "ledger closed for e0"
    assert (first["exchange"], first["routing_key"]) == ("events.topic.exchange", "Entry.Posted")
    assert first["dead_service"] == "ledger-service"
    assert 0 <= first["age_seconds"] < 60

    none = await acli("dlq", "list", QUEUE, "--url", filled, "--reason", "undecodable", "--json")
    assert json.loads(none.out)["dead_letters"] == []


async def test_show_prints_one_in_full(filled: str, acli: Cli) -> None:
    result = await acli("dlq", "show", QUEUE, "2", "--url", filled, "--json")
    assert result.code == 0
    letter = json.loads(result.out)
    assert letter["position"] == 2
    assert letter["body"] == {"id": "e1", "cents": 1}
    assert letter["headers"]["tenant"] == "acme"
    assert letter["headers"]["service"] == "poster-service"
    by_id = await acli("dlq", "show", QUEUE, "--id", letter["message_id"], "--url", filled)
    assert by_id.code == 0
    assert by_id.out.startswith(f"{DLQ} #2\n")
    assert '"id": "e1"' in by_id.out
    missing = await acli("dlq", "show", QUEUE, "9", "--url", filled)
    assert missing.code == 4
    assert "no dead letter at position 9" in missing.err
    assert await depth(filled, DLQ) == 3


async def test_replay_into_the_fixed_handler_loses_nothing(filled: str, acli: Cli) -> None:
    dry = await acli("dlq", "replay", QUEUE, "--url", filled, "--dry-run")
    assert dry.code == 0
    assert f"{DLQ}: would replay 3 message(s)" in dry.out
    assert await depth(filled, DLQ) == 3

    result = await acli("dlq", "replay", QUEUE, "--url", filled)
    assert (result.code, result.err) == (0, "")
    assert f"{DLQ}: replayed 3 message(s)" in result.out
    assert await depth(filled, DLQ) == 0
    assert await depth(filled, QUEUE) == 3

    ledger.FAIL["on"] = False
    fixed = ledger.make_ledger()
    # Watched from before it starts: the replayed messages wait in its queue, and may be
    # handled as soon as its consumer is set up.
    async with fixed, capture(fixed) as outcome:
        await fixed.start()
    assert sorted(h.event.id for h in outcome.handled) == ["e0", "e1", "e2"]
    assert outcome.dead_lettered == []
    assert sorted(ledger.HANDLED) == [(f"e{i}", "Entry.Posted", "acme") for i in range(3)]
    assert await depth(filled, DLQ) == 0
    assert await depth(filled, QUEUE) == 0


async def test_a_replay_that_fails_again_comes_back_once_with_a_fresh_count(
    filled: str, acli: Cli
) -> None:
    result = await acli("dlq", "replay", QUEUE, "--url", filled, "--limit", "1")
    assert "replayed 1 message(s)" in result.out
    still_failing = ledger.make_ledger()
    async with still_failing, capture(still_failing) as outcome:
        await still_failing.start()
    assert [d.event.id for d in outcome.dead_lettered] == ["e0"]
    listed = json.loads((await acli("dlq", "list", QUEUE, "--url", filled, "--json")).out)
    letters = listed["dead_letters"]
    assert [d["exception_message"] for d in letters] == [
        "ledger closed for e1",
        "ledger closed for e2",
        "ledger closed for e0",  # replayed, failed again: back once, at the end
    ]
    assert [d["attempt"] for d in letters] == [1, 1, 1]  # counted afresh, not 2


async def test_an_unroutable_replay_stops_and_keeps_the_dead_letter(filled: str, acli: Cli) -> None:
    connection = await aio_pika.connect(filled)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)  # its bindings go with it
    for target in ("queue", "exchange"):
        result = await acli("dlq", "replay", DLQ, "--url", filled, "--to", target)
        assert result.code == 1
        assert "replay stopped at #1" in result.err
        assert "unroutable" in result.err
        assert result.err.count("\n") == 1
        assert await depth(filled, DLQ) == 3


async def test_purge_asks_unless_yes(filled: str, acli: Cli) -> None:
    refused = await acli("dlq", "purge", QUEUE, "--url", filled)  # stdin is not a terminal
    assert refused.code == 2
    assert "refusing to purge without --yes" in refused.err
    assert await depth(filled, DLQ) == 3
    result = await acli("dlq", "purge", QUEUE, "--url", filled, "--yes")
    assert result.code == 0
    assert f"{DLQ}: purged 3 message(s)" in result.out
    assert await depth(filled, DLQ) == 0


async def test_a_missing_queue_is_exit_4(amqp_events_rabbitmq_vhost_url: str, acli: Cli) -> None:
    result = await acli("dlq", "list", "nobody", "--url", amqp_events_rabbitmq_vhost_url)
    assert result.code == 4
    assert result.err == (
        "amqp-events dlq: error: no queue 'nobody.dlq' (the dead-letter queue of 'nobody') on "
        "this broker and vhost\n"
    )


@pytest.mark.parametrize(
    ("url", "code", "named"),
    [
        (
            "amqp://guest:secret@127.0.0.1:1/",
            3,
            "cannot reach the broker at amqp://guest:***@127.0.0.1:1/",
        ),
        ("memory://", 2, "is an in-memory broker"),
        ("http://broker/", 2, "--url: broker URL 'http://broker/' has unknown scheme"),
    ],
)
async def test_bad_or_unreachable_brokers_are_one_line(
    url: str, code: int, named: str, acli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)
    result = await acli("dlq", "list", "q", "--url", url)
    assert result.code == code
    assert named in result.err
    assert "secret" not in result.err
    assert result.err.count("\n") == 1
