"""The per-test vhost fixtures, against a real broker."""

from __future__ import annotations

import asyncio
import json

import aio_pika
import pytest

from amqp_events.testing import BindingInfo, BrokerHandle, ExchangeInfo, QueueInfo, VhostView
from amqp_events.testing._management_api import ManagementApiAdmin
from amqp_events.testing._urls import VHOST_PREFIX

pytest_plugins = ("pytester",)

FIVE_DAYS_MS = 432000000


async def test_vhost_url_points_into_a_fresh_vhost(
    amqp_events_rabbitmq_vhost_url: str,
    amqp_events_rabbitmq_vhost: str,
    amqp_events_rabbitmq_admin: VhostView,
) -> None:
    assert amqp_events_rabbitmq_vhost.startswith(VHOST_PREFIX)
    connection = await aio_pika.connect(amqp_events_rabbitmq_vhost_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            "orders", durable=True, arguments={"x-expires": FIVE_DAYS_MS}
        )
        await queue.bind(await channel.declare_exchange("events", "topic"), "Order.#")
        # The admin blocks (rabbitmqctl takes ~0.5 s): keep the loop and the connection alive.
        queues = await asyncio.to_thread(amqp_events_rabbitmq_admin.queues)

    assert amqp_events_rabbitmq_admin.vhost == amqp_events_rabbitmq_vhost
    assert queues == [
        QueueInfo(
            name="orders",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={"x-expires": FIVE_DAYS_MS},
            messages_ready=0,
            messages_unacknowledged=0,
            consumers=0,
        )
    ]
    # Only explicit bindings: not the default exchange's implicit one to "orders".
    assert amqp_events_rabbitmq_admin.bindings() == [
        BindingInfo(queue="orders", exchange="events", routing_key="Order.#", arguments={})
    ]
    assert amqp_events_rabbitmq_admin.exchange("events") == ExchangeInfo(
        name="events",
        type="topic",
        durable=False,
        auto_delete=False,
        internal=False,
        arguments={},
    )


def test_queue_lookup_names_the_queues_there(amqp_events_rabbitmq_admin: VhostView) -> None:
    with pytest.raises(LookupError, match=r"no queue 'missing' in vhost .* \(queues: none\)"):
        amqp_events_rabbitmq_admin.queue("missing")


def test_vhost_exists_during_the_test(
    amqp_events_rabbitmq_broker: BrokerHandle, amqp_events_rabbitmq_vhost: str
) -> None:
    assert amqp_events_rabbitmq_vhost in amqp_events_rabbitmq_broker.vhost_admin().list_vhosts()


async def test_amqp_url_reaches_the_broker(amqp_events_rabbitmq_url: str) -> None:
    connection = await aio_pika.connect(amqp_events_rabbitmq_url)
    await connection.close()


LIFECYCLE_TESTS = """
import json

RECORD = {record!r}


def record(broker, vhost, url):
    entry = {{"vhost": vhost, "url": url, "present": vhost in broker.vhost_admin().list_vhosts()}}
    with open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\\n")


def test_passes(
    amqp_events_rabbitmq_broker, amqp_events_rabbitmq_vhost, amqp_events_rabbitmq_vhost_url
):
    record(amqp_events_rabbitmq_broker, amqp_events_rabbitmq_vhost, amqp_events_rabbitmq_vhost_url)


def test_fails(
    amqp_events_rabbitmq_broker, amqp_events_rabbitmq_vhost, amqp_events_rabbitmq_vhost_url
):
    record(amqp_events_rabbitmq_broker, amqp_events_rabbitmq_vhost, amqp_events_rabbitmq_vhost_url)
    raise AssertionError("fails on purpose: its vhost must be deleted all the same")
"""


def test_each_test_gets_its_own_vhost_deleted_afterwards(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    amqp_events_rabbitmq_broker: BrokerHandle,
) -> None:
    admin = amqp_events_rabbitmq_broker.vhost_admin()
    # The inner session must find this same broker and manage it the same way.
    monkeypatch.setenv("AMQP_URL", amqp_events_rabbitmq_broker.url)
    if isinstance(admin, ManagementApiAdmin):
        monkeypatch.setenv("AMQP_MANAGEMENT_URL", admin.api_url)
    elif amqp_events_rabbitmq_broker.container is not None:
        pytest.skip("an inner session cannot exec rabbitmqctl in this session's container")
    record = pytester.path / "vhosts.jsonl"
    pytester.makeini(
        """
        [pytest]
        asyncio_default_fixture_loop_scope = function
        # The outer session imported amqp_events before the inner one could rewrite it.
        filterwarnings = ignore::pytest.PytestAssertRewriteWarning
        """
    )
    pytester.makepyfile(LIFECYCLE_TESTS.format(record=str(record)))

    result = pytester.runpytest()

    result.assert_outcomes(passed=1, failed=1)
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    vhosts = {entry["vhost"] for entry in entries}
    assert len(entries) == len(vhosts) == 2
    assert all(entry["present"] for entry in entries)
    assert all(entry["url"].endswith("/" + entry["vhost"]) for entry in entries)
    assert not vhosts & set(admin.list_vhosts())
