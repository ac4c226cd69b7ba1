"""Tests that stop, restart or cut the broker take it alone; every other test shares it.

A ``disruptive`` test breaks whatever else talks to the local broker while it runs: the tests of
the other pytest-xdist workers, or of another pytest run on the same machine. So each test runs
(setup, call and teardown, the session fixtures it starts included) holding a lock on one file
in the temp directory: shared for an ordinary test, exclusive for a disruptive one. The lock is
``flock``'s, so the kernel releases it when a worker dies; where there is no ``fcntl``
(Windows) tests run unlocked, as disruptive tests need the local ``rabbitmqctl`` anyway.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

__all__ = ["ENV_HOLDING", "broker_turn", "lock_path"]

# Set while this process holds a turn, and inherited by its children: a test that runs pytest
# inside itself (pytester, in process or not) must not wait for the turn it is part of.
ENV_HOLDING = "AMQP_EVENTS_BROKER_TURN"


def lock_path() -> str:
    """The lock file: one per user, shared by every pytest run of that user on this machine."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"amqp-events-pytest-{user}.lock")


@contextlib.contextmanager
def broker_turn(*, exclusive: bool) -> Iterator[None]:
    """Hold the broker for the ``with`` block: alone if ``exclusive``, else with other tests."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    if os.environ.get(ENV_HOLDING):
        yield  # inside a test that holds it already
        return
    try:
        fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # an unwritable temp dir: run unlocked rather than not at all
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        os.environ[ENV_HOLDING] = "1"
        try:
            yield
        finally:
            os.environ.pop(ENV_HOLDING, None)
    finally:
        os.close(fd)  # releases the lock
