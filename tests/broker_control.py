"""Breaking the real broker on purpose: killed connections, deleted queues, restarts.

Uses the local ``rabbitmqctl``. Every function leaves the broker running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from urllib.parse import unquote, urlsplit

import pytest


def require_rabbitmqctl() -> None:
    if shutil.which("rabbitmqctl") is None:
        message = "needs rabbitmqctl on PATH to break the local broker"
        if os.environ.get("AMQP_EVENTS_REQUIRE_BROKER") == "1":
            pytest.fail(message)
        pytest.skip(message)


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
    await rabbitmqctl("close_all_connections", "--global", "killed by a test")


async def delete_queue(url: str, queue: str) -> None:
    await rabbitmqctl("delete_queue", "-p", vhost_of(url), queue)


async def stop_broker() -> None:
    await rabbitmqctl("stop_app")


async def start_broker() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


async def restart_broker(down_for: float = 0.0) -> None:
    await stop_broker()
    try:
        await asyncio.sleep(down_for)
    finally:
        await start_broker()
