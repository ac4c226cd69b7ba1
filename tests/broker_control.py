"""Breaking the real broker on purpose: killed connections, deleted queues, restarts.

Uses the local ``rabbitmqctl``. Every function leaves the broker running.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from urllib.parse import unquote, urlsplit

from amqp_events.testing._plugin import skip_or_fail


def require_rabbitmqctl() -> None:
    """Skip the test without ``rabbitmqctl`` on PATH, or fail it when a broker is required."""
    if shutil.which("rabbitmqctl") is None:
        skip_or_fail("needs rabbitmqctl on PATH to break the local broker")


async def rabbitmqctl(*args: str, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    if check and process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {text}")
    return text


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


async def close_all_connections() -> None:
    """Every client connection of the broker, all vhosts: for disruptive tests only."""
    await rabbitmqctl("close_all_connections", "--global", "killed by a test")


async def close_vhost_connections(
    vhost: str, *, client: str = "", reason: str = "killed by a test"
) -> int:
    """Close the client connections of ``vhost`` only (those whose client properties mention
    ``client``, if given); return how many. ``list_connections`` ignores ``-p``: filter here."""
    listing = await rabbitmqctl("list_connections", "pid", "vhost", "client_properties", "-q")
    closed = 0
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == vhost and client in fields[2]:
            await rabbitmqctl("close_connection", fields[0], reason, check=False)
            closed += 1
    return closed


async def delete_queue(url: str, queue: str) -> None:
    await rabbitmqctl("delete_queue", "-p", vhost_of(url), queue)


async def stop_broker() -> None:
    await rabbitmqctl("stop_app")


async def start_broker() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


@contextlib.asynccontextmanager
async def outage() -> AsyncIterator[None]:
    """The broker stopped for the ``with`` block, and started again however it ends."""
    await stop_broker()
    try:
        yield
    finally:
        await start_broker()


async def restart_broker(down_for: float = 0.0) -> None:
    async with outage():
        await asyncio.sleep(down_for)
