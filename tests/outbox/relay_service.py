"""A service that only relays an outbox, for tests that kill it with SIGKILL.

Run from the repository root::

    python -m tests.outbox.relay_service <amqp-url> <database-url> <postgresql-schema-or-"">

Prints ``ready`` once started, then relays until killed.
"""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy.ext.asyncio import create_async_engine

from amqp_events import Connection, event_stream_publisher
from amqp_events.outbox import Outbox, outbox_relay
from tests.outbox.helpers import order_publisher


async def main(amqp_url: str, database_url: str, schema: str) -> None:
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(database_url, connect_args=connect_args)
    outbox = Outbox(engine)
    connection = Connection("orders", amqp_url)
    await connection.start(
        event_stream_publisher(order_publisher()), outbox_relay(outbox, batch_size=50)
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
