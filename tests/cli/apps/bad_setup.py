"""An APP whose setup the library refuses: a handler without an event type."""

from __future__ import annotations

from amqp_events import Connection, event_stream_consumer


async def untyped(event):  # type: ignore[no-untyped-def]
    pass


conn = Connection("bad-setup", "memory://")
conn.use(event_stream_consumer("Thing.Done", untyped))
