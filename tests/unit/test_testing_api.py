"""The public API of ``amqp_events.testing`` is exactly what docs/testing.md documents."""

from __future__ import annotations

import inspect
import pkgutil
import re
from pathlib import Path

import amqp_events.testing
from amqp_events import AmqpEventsError

DOCUMENTED = {
    # Driving services without sleeps, and what they did.
    "run_until_idle",
    "capture",
    "Outcome",
    "Handled",
    "DeadLettered",
    "Published",
    # The types the fixtures hand a test.
    "ConnectionFactory",
    "VhostView",
    # What a queue, an exchange, a binding looks like, on both brokers.
    "QueueInfo",
    "ExchangeInfo",
    "BindingInfo",
    # A RabbitMQ for tests outside pytest.
    "find_broker",
    "BrokerHandle",
    "BrokerNotFoundError",
    "VhostAdminError",
    "assert_compatible",
}


def test_all_is_the_documented_set() -> None:
    assert set(amqp_events.testing.__all__) == DOCUMENTED
    assert len(amqp_events.testing.__all__) == len(DOCUMENTED)


def test_the_docs_list_exactly_these_names() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "testing.md").read_text()
    section = re.search(r"## What `amqp_events.testing` exports\n(.*?)\n\n", doc, re.S)
    assert section is not None
    rows = section.group(1).splitlines()[2:]  # below the header and the |---| line
    names = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert names == DOCUMENTED


def test_every_public_name_has_a_docstring() -> None:
    for name in amqp_events.testing.__all__:
        obj = getattr(amqp_events.testing, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        # Not inherited from a base class or the Protocol machinery: its own.
        assert obj.__doc__, f"{name} has no docstring of its own"


def test_every_public_method_has_a_docstring() -> None:
    for name in amqp_events.testing.__all__:
        obj = getattr(amqp_events.testing, name)
        if not isinstance(obj, type):
            continue
        for attribute, member in vars(obj).items():
            if callable(member) and not attribute.startswith("_"):
                assert inspect.getdoc(member), f"{name}.{attribute} has no docstring"


def test_every_exception_derives_from_the_root() -> None:
    for name in amqp_events.testing.__all__:
        obj = getattr(amqp_events.testing, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, AmqpEventsError), name


def test_implementation_modules_are_private() -> None:
    for module in pkgutil.iter_modules(amqp_events.testing.__path__):
        assert module.name.startswith("_"), module.name
