"""The public surface of amqp_events.outbox is exactly the documented set, each name with a
docstring, and its implementation modules are private."""

from __future__ import annotations

import inspect
import pkgutil

import amqp_events.outbox

DOCUMENTED = {"BlockedPartition", "Inbox", "Outbox", "inbox_cleanup", "outbox_relay"}


def test_all_is_the_documented_set() -> None:
    assert set(amqp_events.outbox.__all__) == DOCUMENTED
    assert len(amqp_events.outbox.__all__) == len(DOCUMENTED)


def test_every_public_name_has_a_docstring() -> None:
    for name in amqp_events.outbox.__all__:
        assert inspect.getdoc(getattr(amqp_events.outbox, name)), name


def test_implementation_modules_are_private() -> None:
    for module in pkgutil.iter_modules(amqp_events.outbox.__path__):
        assert module.name.startswith("_"), module.name
