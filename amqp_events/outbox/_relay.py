"""The relay: publishes committed outbox rows with the broker's confirm, then marks them sent.

``outbox_relay`` is the setup; ``Relay`` the service loop it runs while its connection is
started: a pass (``_relay_pass``) whenever a commit wakes it or its poll comes, backoff after
a failed pass, cleanup of old sent rows, the gauges, and on PostgreSQL a LISTEN connection.
How rows are published: ``_relay_publish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from .._errors import ConfigurationError
from .._instrument import Instrument
from .._setup import Setup, SetupBuilder
from .._setup._builder import SetupPlan
from .._setup._instruments import prometheus_registry_for
from .._transport._base import Transport
from ._outbox import Outbox
from ._relay_pass import RelayOptions, RelayPasses, backoff
from ._relay_publish import faults
from ._tables import notify_channel

__all__ = ["RelayOptions", "faults", "outbox_relay"]

log = logging.getLogger(__name__)


def outbox_relay(
    outbox: Outbox,
    *,
    batch_size: int = 1000,
    poll_interval: float | None = None,
    retry_backoff: tuple[float, float] = (0.2, 10.0),
    retention: timedelta = timedelta(hours=1),
    cleanup_interval: float = 60.0,
    strict_order: bool = False,
) -> Setup:
    """A setup that relays ``outbox`` through this connection while it is started.

    Each pass takes due rows ``batch_size`` at a time, publishes a batch with publisher
    confirms (pipelined) and marks it sent while the next batch is published, reading the one
    after meanwhile. With ``with_prometheus(registry)`` on the same connection it keeps the
    gauges ``amqp_events_outbox_pending_rows`` and ``amqp_events_outbox_blocked_partitions``.
    It wakes when a transaction in this process commits events, on PostgreSQL when any does
    (LISTEN/NOTIFY), and at least every
    ``poll_interval`` seconds (default 1.0 on PostgreSQL, where polling is only the fallback,
    0.05 on SQLite, which has no notifications). A row the broker does not confirm is tried
    again after ``retry_backoff`` (initial, max) seconds, doubling, and holds back the later
    rows of its partition meanwhile. Rows sent more than ``retention`` ago are deleted every
    ``cleanup_interval`` seconds, in batches. Several relays (service instances) on one
    PostgreSQL database share the work by partition; on SQLite one relay at a time works.

    Rows of one partition are pipelined: a run of them is sent before the first is confirmed.
    If the broker refuses one of them and takes a later one (a full ``reject-publish`` queue
    that drains meanwhile does this), the later rows already reached the broker; they are not
    marked sent and are published again after the refused one, so the last copy of each
    arrives in order (the inbox absorbs the earlier copy). ``strict_order=True`` sends one row
    of a partition at a time instead, each after the previous one's confirm: no row ever
    reaches the broker before an earlier row of its partition, at the cost of a round trip
    per row and partition (partitions still go side by side).
    """
    if not isinstance(outbox, Outbox):
        raise ConfigurationError(f"outbox_relay takes an Outbox, got {outbox!r}")
    initial, maximum = retry_backoff
    for name, value in (
        ("batch_size", batch_size),
        ("retry_backoff[0]", initial),
        ("retry_backoff[1]", maximum),
        ("cleanup_interval", cleanup_interval),
        ("poll_interval", 1.0 if poll_interval is None else poll_interval),
    ):
        if not value > 0:
            raise ConfigurationError(f"outbox_relay: {name} must be positive, got {value!r}")
    if poll_interval is None:
        poll_interval = 1.0 if outbox._db.is_postgresql else 0.05
    options = RelayOptions(
        batch_size,
        poll_interval,
        initial,
        max(initial, maximum),
        retention,
        cleanup_interval,
        bool(strict_order),
    )

    def setup(builder: SetupBuilder) -> None:
        relay = Relay(outbox, options, builder.service_name, builder._plan)
        builder._plan.transport_users.append(relay.attach)
        builder.run_while_started(f"outbox-relay:{outbox.table.name}", relay.run)

    return setup


# Seconds between two updates of the relay's gauges (with_prometheus).
_GAUGE_INTERVAL = 1.0


class Relay(RelayPasses):
    """One connection's relay of one outbox."""

    def __init__(
        self, outbox: Outbox, options: RelayOptions, service: str, plan: SetupPlan | None = None
    ) -> None:
        self._plan = plan
        self._constants = {}
        self._gauges: tuple[Any, Any] | None = None  # (pending rows, blocked partitions)
        self._gauges_due = 0.0
        self._outbox = outbox
        self._db = outbox._db
        self._table = outbox.table
        self._options = options
        self._service = service
        self._transport: Transport | None = None
        self._instrument: Instrument | None = None
        self._wake = asyncio.Event()
        self._lock = self._db.relay_lock(self._table.name)
        self._next_due: float | None = None  # when a row in backoff is due (monotonic)

    def attach(self, transport: Transport, instrument: Instrument | None) -> None:
        self._transport = transport
        self._instrument = instrument

    async def run(self) -> None:
        outbox = self._outbox
        outbox._waiters.add(self._wake)
        listener = (
            asyncio.get_running_loop().create_task(self._listen())
            if self._db.is_postgresql
            else None
        )
        next_cleanup = time.monotonic() + self._options.cleanup_interval
        failures = 0
        self._gauges = self._find_gauges()
        task = asyncio.current_task()
        try:
            while True:
                if task is not None and task.cancelling():
                    # A library below swallowed our cancellation (or turned it into an error
                    # we caught): stop all the same, or the relay outlives its connection.
                    raise asyncio.CancelledError
                self._wake.clear()
                if not await self._lock.acquire_outbox():
                    await self._sleep(self._options.poll_interval)
                    continue
                try:
                    published = await self._pass()
                    await self._update_gauges()
                    if time.monotonic() >= next_cleanup:
                        next_cleanup = time.monotonic() + self._options.cleanup_interval
                        await outbox.cleanup(retention=self._options.retention)
                except Exception:
                    failures += 1
                    delay = backoff(self._options, failures)
                    log.warning(
                        "%s: outbox relay of %s failed (%d in a row); trying again in %.1fs",
                        self._service,
                        self._table.name,
                        failures,
                        delay,
                        exc_info=True,
                    )
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if published < self._options.batch_size:
                    await self._sleep(self._wait_time())
        finally:
            outbox._waiters.discard(self._wake)
            self._lock.release_outbox()
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    def _find_gauges(self) -> tuple[Any, Any] | None:
        """The gauges of the connection's ``with_prometheus`` registry, if it has one (the
        plan is complete once the connection started)."""
        registry = prometheus_registry_for(self._plan) if self._plan is not None else None
        if registry is None:
            return None
        from .._metrics import outbox_gauges_for

        gauges = outbox_gauges_for(registry)
        labels = (self._service, self._table.name)
        return (
            gauges.pending_rows.labels(*labels),
            gauges.blocked_partitions.labels(*labels),
        )

    async def _update_gauges(self) -> None:
        """At most once per ``_GAUGE_INTERVAL``: two counting queries, not one per pass."""
        if self._gauges is None or time.monotonic() < self._gauges_due:
            return
        self._gauges_due = time.monotonic() + _GAUGE_INTERVAL
        pending, blocked = await self._outbox._pending_and_blocked()
        self._gauges[0].set(pending)
        self._gauges[1].set(blocked)

    def _wait_time(self) -> float:
        wait = self._options.poll_interval
        if self._next_due is not None:
            wait = min(wait, max(0.0, self._next_due - time.monotonic()))
        return wait

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns normally when it is
        # cancelled in the loop turn the event is set in, and the relay would outlive close().
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _listen(self) -> None:
        """Wake the relay on each NOTIFY of a commit; reconnect when the listening connection
        is lost (notifications sent meanwhile are lost: a pass runs at once after, and the
        poll covers the rest)."""
        channel = notify_channel(self._table.name)
        failures = 0
        while True:
            try:
                async with self._db.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    try:
                        await driver.add_listener(channel, self._notified)
                        self._wake.set()
                        failures = 0
                        while True:  # notice a dead connection; never inside a transaction
                            await asyncio.sleep(5.0)
                            await driver.fetchval("SELECT 1")
                    finally:
                        await conn.invalidate()  # never back to the pool with a listener
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = backoff(self._options, failures)
                log.warning(
                    "%s: outbox relay lost its LISTEN connection; polling, retrying in %.1fs",
                    self._service,
                    delay,
                    exc_info=True,
                )
                await asyncio.sleep(delay)

    def _notified(self, *_args: Any) -> None:
        self._wake.set()
