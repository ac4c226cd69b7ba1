"""pytest plugin of amqp-events: a real RabbitMQ for the session, a fresh vhost for each test,
the in-memory broker, and tests that run on both.

Registered through the ``pytest11`` entry point, so installing amqp-events is enough. Tests
that use the fixtures below are marked ``rabbitmq`` automatically, so ``-m "not rabbitmq"``
runs everything else. Without a broker they are skipped, unless
``AMQP_EVENTS_REQUIRE_BROKER=1`` (for CI), which makes them fail instead. Tests marked
``disruptive`` run only with ``AMQP_EVENTS_DISRUPTIVE=1``, and then alone: no other test, of
this run's pytest-xdist workers or of another run on the machine, runs beside them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, NoReturn

import pytest

from .._connection import Connection
from .._transport.memory import MemoryBroker
from ._broker import BrokerHandle, BrokerNotFoundError, find_broker
from ._broker_turns import broker_turn
from ._burst import ConnectionFactory
from ._vhost_admin import VhostAdminError, VhostView

__all__ = [
    "ENV_DISRUPTIVE",
    "ENV_REQUIRE_BROKER",
    "amqp_events_broker_url",
    "amqp_events_memory_broker",
    "amqp_events_rabbitmq_admin",
    "amqp_events_rabbitmq_broker",
    "amqp_events_rabbitmq_url",
    "amqp_events_rabbitmq_vhost",
    "amqp_events_rabbitmq_vhost_url",
    "broker_required",
    "fresh_vhost",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_protocol",
    "skip_or_fail",
]

ENV_REQUIRE_BROKER = "AMQP_EVENTS_REQUIRE_BROKER"
# Tests marked ``disruptive`` stop, restart or cut the broker: on a laptop that is the user's own
# development broker, so they run only when asked (CI asks).
ENV_DISRUPTIVE = "AMQP_EVENTS_DISRUPTIVE"

# Fixtures that need a broker: a test using any of them gets the ``rabbitmq`` marker.
_BROKER_FIXTURES = frozenset(
    {
        "amqp_events_rabbitmq_broker",
        "amqp_events_rabbitmq_url",
        "amqp_events_rabbitmq_vhost",
        "amqp_events_rabbitmq_vhost_url",
        "amqp_events_rabbitmq_admin",
    }
)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def broker_required() -> bool:
    """Whether ``AMQP_EVENTS_REQUIRE_BROKER`` is set (``1``, ``true``, ``yes`` or ``on``): the
    one place that reads it."""
    return _flag(ENV_REQUIRE_BROKER)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test for want of a broker (or of a tool to manage it), or fail it when
    :func:`broker_required`."""
    if broker_required():
        pytest.fail(f"{reason}\n({ENV_REQUIRE_BROKER} is set)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_vhost(broker: BrokerHandle) -> Iterator[str]:
    """A vhost made on ``broker`` for the ``with`` block and deleted after it (with others, in
    a batch: ``BrokerHandle.delete_vhost_later``), passed or failed;
    the test fails (no traceback) if vhosts cannot be created."""
    try:
        vhost = broker.create_vhost()
    except VhostAdminError as exc:
        problem = str(exc)  # failed outside the except: no chained traceback
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield vhost
    finally:
        broker.delete_vhost_later(vhost)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, so that ``--strict-markers`` accepts them in any project."""
    config.addinivalue_line("markers", "rabbitmq: needs a real RabbitMQ broker")
    config.addinivalue_line("markers", "disruptive: stops, restarts or cuts the local broker")
    config.addinivalue_line(
        "markers", "alone: runs with no other test on the broker (it measures time)"
    )


# First, so that ``-m`` deselection, which runs in this same hook, sees the marker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``rabbitmq`` every test that uses a broker fixture; skip ``disruptive`` tests
    unless ``AMQP_EVENTS_DISRUPTIVE=1`` asks for them."""
    disruptive_allowed = _flag(ENV_DISRUPTIVE)
    not_asked = pytest.mark.skip(
        reason=f"stops, restarts or cuts the broker: runs only with {ENV_DISRUPTIVE}=1 (CI sets it)"
    )
    for item in items:
        if _BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.rabbitmq)
        if not disruptive_allowed and item.get_closest_marker("disruptive") is not None:
            item.add_marker(not_asked)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Run each test holding the local broker: alone for a ``disruptive`` one (when asked
    for) and one marked ``alone`` (its assertions are about time, which other tests' load on
    the broker would skew), shared with every other test otherwise, across pytest-xdist
    workers and runs."""
    exclusive = item.get_closest_marker("alone") is not None or (
        _flag(ENV_DISRUPTIVE) and item.get_closest_marker("disruptive") is not None
    )
    with broker_turn(exclusive=exclusive):
        return (yield)


@pytest.fixture(scope="session")
def amqp_events_rabbitmq_broker() -> Iterator[BrokerHandle]:
    """The broker of this session (:func:`amqp_events.testing.find_broker`).

    ``AMQP_URL`` if set, else RabbitMQ on 127.0.0.1:5672, else a testcontainers container,
    which is stopped at the end of the session. With none, the test is skipped, or fails when
    ``AMQP_EVENTS_REQUIRE_BROKER=1``; the reason lists what was tried.
    """
    handle: BrokerHandle | None = None
    reason = ""
    try:
        handle = find_broker(require=True)
    except BrokerNotFoundError as exc:
        reason = str(exc)  # skipped or failed outside the except: no chained traceback
    if handle is None:
        skip_or_fail(reason)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="session")
def amqp_events_rabbitmq_url(amqp_events_rabbitmq_broker: BrokerHandle) -> str:
    """AMQP URL of the session's broker, default vhost; prefer
    ``amqp_events_rabbitmq_vhost_url``."""
    return amqp_events_rabbitmq_broker.url


@pytest.fixture
def amqp_events_rabbitmq_vhost(amqp_events_rabbitmq_broker: BrokerHandle) -> Iterator[str]:
    """Name of a vhost made for this test alone (``amqp-events-test-<hex>``).

    The URL's user gets full permissions on it. It is deleted after the test, passed or
    failed, with everything declared in it. The test fails if vhosts cannot be created.
    """
    with fresh_vhost(amqp_events_rabbitmq_broker) as vhost:
        yield vhost


@pytest.fixture
def amqp_events_rabbitmq_vhost_url(
    amqp_events_rabbitmq_broker: BrokerHandle, amqp_events_rabbitmq_vhost: str
) -> str:
    """AMQP URL of the broker pointing into this test's own vhost
    (``amqp_events_rabbitmq_vhost``)."""
    return amqp_events_rabbitmq_broker.vhost_url(amqp_events_rabbitmq_vhost)


@pytest.fixture
def amqp_events_rabbitmq_admin(
    amqp_events_rabbitmq_broker: BrokerHandle, amqp_events_rabbitmq_vhost: str
) -> VhostView:
    """Inspects this test's vhost: ``queues()``, ``queue(name)``, ``exchanges()``,
    ``exchange(name)`` and ``bindings(queue=None)``.

    They return :class:`QueueInfo`, :class:`ExchangeInfo` and :class:`BindingInfo`, the shapes
    ``MemoryBroker`` returns, whether the management API or ``rabbitmqctl`` answered. The calls
    block (``rabbitmqctl`` takes about half a second).
    """
    return amqp_events_rabbitmq_broker.vhost_view(amqp_events_rabbitmq_vhost)


@pytest.fixture
def amqp_events_memory_broker() -> Iterator[MemoryBroker]:
    """A fresh in-memory broker on virtual time; connect to it with
    ``Connection(name, amqp_events_memory_broker.url)``.

    Its clock jumps to the next message expiry whenever it is idle, so retry delays and TTLs
    pass at once (``MemoryBroker(virtual_time=True)``).
    """
    broker = MemoryBroker(virtual_time=True)
    yield broker
    broker.reset()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def amqp_events_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test twice: on a fresh in-memory broker, and on a fresh RabbitMQ vhost."""
    if request.param == "memory":
        broker = MemoryBroker()
        yield broker.url
        broker.reset()
    else:
        yield request.getfixturevalue("amqp_events_rabbitmq_vhost_url")


try:  # the async fixture needs pytest-asyncio; the rest of the plugin does not
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only where pytest-asyncio is missing
    pass
else:
    __all__ += ["amqp_events_connection_factory"]

    @pytest_asyncio.fixture
    async def amqp_events_connection_factory(
        amqp_events_broker_url: str,
    ) -> AsyncIterator[ConnectionFactory]:
        """``amqp_events_connection_factory("orders", **options)`` makes a ``Connection`` to
        ``amqp_events_broker_url`` (so the test runs on both brokers); every one is closed after
        the test."""
        made: list[Connection] = []

        def make(service_name: str, **options: Any) -> Connection:
            connection = Connection(service_name, amqp_events_broker_url, **options)
            made.append(connection)
            return connection

        yield make
        for connection in reversed(made):
            await connection.close()
