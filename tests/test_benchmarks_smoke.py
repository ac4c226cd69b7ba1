"""The benchmark (``python -m benchmarks``) at a tiny size on the real broker.

It checks that the harness runs every workload with every installed client and that no message is
lost or handled twice. Timings are never asserted: CI machines are too noisy for that.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.report import render, summarize, write_json
from benchmarks.runner import WORKLOADS, Options, run_benchmarks
from benchmarks.scaling import main as scaling_main
from benchmarks.workloads_go import unavailable as go_unavailable
from benchmarks.workloads_outbox import unavailable as outbox_unavailable


async def test_every_workload_delivers_every_message(
    amqp_events_rabbitmq_url: str, tmp_path: Path
) -> None:
    options = Options(
        messages=300,
        runs=1,
        latency_seconds=0.3,
        memory_messages=2_000,
        url=amqp_events_rabbitmq_url,
    )

    report = await run_benchmarks(options)

    summaries = summarize(report)
    clients = ["aio-pika", "amqp-events"]
    if importlib.util.find_spec("faststream") is not None:
        clients.append("faststream")
    if go_unavailable() is None:  # a Go toolchain and amqp091-go's source are installed
        clients += ["go-amqp091", "go-enveloped"]
    alone = ("memory", "outbox-relay", "publish-many")  # amqp-events' own workloads
    expected = {(w, c) for w in WORKLOADS if w not in alone for c in clients}
    expected.add(("memory", "amqp-events"))
    expected.add(("publish-many", "amqp-events"))
    if outbox_unavailable() is None:  # the [outbox] extra is installed
        expected.add(("outbox-relay", "amqp-events"))
    assert {(s.workload, s.client) for s in summaries} == expected
    for s in summaries:
        assert not s.errors, (s.workload, s.client, s.errors)
        assert s.received == s.expected, f"{s.workload} {s.client}: messages lost"
        assert s.duplicates == 0, f"{s.workload} {s.client}: messages handled twice"
    rendered = render(report, summaries)
    assert "latency" in rendered
    assert ("×go" in rendered) == ("go-amqp091" in clients)
    if outbox_unavailable() is None:
        assert "×pipelined" in rendered
        assert "×many" in rendered
    path = tmp_path / "results.json"
    write_json(report, summaries, path)
    written = json.loads(path.read_text())
    assert all(r["complete"] for r in written["results"])


def test_unknown_only_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="unknown --only nosuch"):
        main(["--only", "nosuch"])


def test_scaling_consumes_every_message_with_each_worker_count(
    amqp_events_rabbitmq_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scaling.json"
    sizes = ["--workers", "1,2", "--messages", "500", "--runs", "1"]

    code = scaling_main([*sizes, "--url", amqp_events_rabbitmq_url, "--json", str(path)])

    assert code == 0
    written = json.loads(path.read_text())
    for result in written["results"]:
        assert result["received"] == result["expected"] == 500, result
        assert result["duplicates"] == 0, result
        assert [s["extra"]["left_in_queue"] for s in result["samples"]] == [0]
    assert [r["workers"] for r in written["results"]] == [1, 2]
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()[2:]  # after the title and the header
    assert [line.split()[0] for line in table] == ["1", "2"]
    assert all(line.endswith("500/500") for line in table), table
    assert "What limits it: " in out
