"""Prometheus metrics (``with_prometheus``), on both brokers: what a scrape shows after a run
equals what happened to the messages, by outcome."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from amqp_events import (
    ConfigurationError,
    Connection,
    Drop,
    Publisher,
    Reject,
    RetryPolicy,
    Route,
    Unroutable,
    event_stream_publisher,
    serve_metrics,
    service_publisher,
    service_request_consumer,
    with_prometheus,
    with_tracing,
)
from amqp_events.testing import run_until_idle
from tests.helpers import BrokerUnderTest, Collector, eventually


class Job(BaseModel):
    id: int
    fate: str


class Stray(BaseModel):
    id: int


class Ping(BaseModel):
    n: int


class Pong(BaseModel):
    n: int


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of ``registry``, as Prometheus would scrape it over HTTP."""
    server = serve_metrics(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"

        def get() -> str:
            with urllib.request.urlopen(url, timeout=5) as response:
                text: str = response.read().decode()
                return text

        text = await asyncio.to_thread(get)
    finally:
        server.shutdown()
        server.server_close()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_scraped_counts_equal_what_happened_by_outcome(amqp_events_broker_url: str) -> None:
    registry = CollectorRegistry()
    publisher = Publisher(Route(Job, "Job.Created"), Route(Stray, "Stray.Thing"))
    conn = Connection("worker", amqp_events_broker_url)

    @conn.event_stream_consumer("Job.*", retry=RetryPolicy(attempts=2, delays=[0.05]))
    async def work(event: Job) -> None:
        if event.fate == "drop":
            raise Drop("not for us")
        if event.fate == "reject":
            raise Reject("malformed")
        if event.fate == "fail":
            raise RuntimeError("down")

    fates = ["ok", "ok", "ok", "drop", "drop", "reject", "fail", "fail"]
    async with conn:
        await conn.start(event_stream_publisher(publisher), with_prometheus(registry))
        await run_until_idle(
            conn, publish=[(publisher, Job(id=i, fate=f)) for i, f in enumerate(fates)]
        )
        with pytest.raises(Unroutable):
            await publisher.publish(Stray(id=1), mandatory=True)
        samples = await scrape(registry)

    queue = "events.topic.exchange.queue.worker"
    consumed = "amqp_events_consumed_total"
    by = {"service": "worker", "queue": queue, "pattern": "Job.*"}
    assert value(samples, consumed, outcome="acked", **by) == 3
    assert value(samples, consumed, outcome="dropped", **by) == 2
    assert value(samples, consumed, outcome="retried", **by) == 2  # each "fail" once
    assert value(samples, consumed, outcome="dead_lettered", reason="rejected", **by) == 1
    assert value(samples, consumed, outcome="dead_lettered", reason="handler-failed", **by) == 2
    assert value(samples, consumed) == 3 + 2 + 2 + 1 + 2  # nothing else
    # The incoming key never becomes a label: only the registered pattern does.
    assert not any("Job.Created" in dict(ls).get("pattern", "") for _, ls in samples)

    published = "amqp_events_published_total"
    exchange = {"service": "worker", "exchange": "events.topic.exchange"}
    assert value(samples, published, outcome="confirmed", **exchange) == len(fates)
    assert value(samples, published, outcome="returned", **exchange) == 1
    assert value(samples, published) == len(fates) + 1
    assert value(samples, "amqp_events_publish_confirm_seconds_count", **exchange) == len(fates)

    runs = 3 + 2 + 1 + 2 * 2  # the handler ran once per delivery, retries included
    assert value(samples, "amqp_events_handler_duration_seconds_count", **by) == runs
    errors = "amqp_events_handler_errors_total"
    assert value(samples, errors, exception="RuntimeError", **by) == 4
    assert value(samples, errors, exception="Reject", **by) == 1
    assert value(samples, errors) == 5  # Drop is on purpose, not an error
    assert value(samples, "amqp_events_handlers_in_flight", queue=queue) == 0


async def test_in_flight_and_pending_requests_while_a_request_is_handled(
    amqp_events_broker_url: str,
) -> None:
    registry = CollectorRegistry()
    inside: Collector[Samples] = Collector()
    release = asyncio.Event()
    caller = Publisher(Route(Ping, "Ping"))
    server = Connection("pong", amqp_events_broker_url)
    client = Connection("ping", amqp_events_broker_url)

    async def answer(event: Ping) -> Pong:
        inside.add(await scrape(registry))
        await release.wait()
        return Pong(n=event.n)

    async with server, client:
        await server.start(service_request_consumer("Ping", answer), with_prometheus(registry))
        await client.start(
            service_publisher("pong", caller, awaitable=True), with_prometheus(registry)
        )
        request = asyncio.create_task(caller.request(Ping(n=1), Pong, timeout=10))
        (during,) = await inside.wait(1)
        release.set()
        assert await request == Pong(n=1)

        async def settled() -> bool:
            # The caller may have the response before the server's ack of the request.
            samples = await scrape(registry)
            return value(samples, "amqp_events_consumed_total", service="pong") == 1

        await eventually(settled, what="the request acked")
        after = await scrape(registry)

    assert value(during, "amqp_events_handlers_in_flight", service="pong") == 1
    assert value(during, "amqp_events_pending_requests", service="ping", target="pong") == 1
    assert value(after, "amqp_events_handlers_in_flight", service="pong") == 0
    assert value(after, "amqp_events_pending_requests", service="ping", target="pong") == 0
    # The request, its response, and the response taken by the awaiting caller.
    assert value(after, "amqp_events_published_total", service="ping", outcome="confirmed") == 1
    assert value(after, "amqp_events_published_total", service="pong", outcome="confirmed") == 1
    assert value(after, "amqp_events_consumed_total", service="pong", outcome="acked") == 1
    assert value(after, "amqp_events_consumed_total", service="ping", outcome="response") == 1


async def test_a_lost_connection_counts_as_a_reconnect(
    amqp_events_broker_url: str, request: pytest.FixtureRequest
) -> None:
    registry = CollectorRegistry()
    publisher = Publisher(Route(Job, "Job.Created"))
    conn = Connection("survivor", amqp_events_broker_url)
    broker = BrokerUnderTest.for_test(amqp_events_broker_url, request)
    async with conn:
        await conn.start(event_stream_publisher(publisher), with_prometheus(registry))
        await broker.close_own_connections()

        async def counted() -> bool:
            samples = await scrape(registry)
            return value(samples, "amqp_events_reconnects_total", service="survivor") == 1

        await eventually(counted, what="a reconnect counted")
        await publisher.publish(Job(id=1, fate="ok"))  # and it works again


async def test_connections_share_a_registry_and_the_same_setup_twice_is_refused(
    amqp_events_broker_url: str,
) -> None:
    registry = CollectorRegistry()
    first = Connection("a", amqp_events_broker_url)
    second = Connection("b", amqp_events_broker_url)
    async with first, second:
        await first.start(with_prometheus(registry))
        await second.start(with_prometheus(registry))  # no duplicate registration
    third = Connection("c", amqp_events_broker_url)
    with pytest.raises(ConfigurationError, match="with_prometheus"):
        await third.start(with_prometheus(registry), with_prometheus(registry))
    with pytest.raises(ConfigurationError, match="CollectorRegistry"):
        with_prometheus(registry="nope")  # type: ignore[arg-type]


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"amqp-events\[metrics\]"):
        with_prometheus()
    with pytest.raises(ConfigurationError, match=r"amqp-events\[metrics\]"):
        serve_metrics(0)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"amqp-events\[tracing\]"):
        with_tracing()


def test_importing_amqp_events_imports_neither_extra() -> None:
    code = (
        "import sys, amqp_events; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('prometheus_client', 'opentelemetry')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
