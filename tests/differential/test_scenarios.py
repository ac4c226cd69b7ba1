"""Every scenario runs on RabbitMQ and on the memory broker; what a user observes must agree."""

from __future__ import annotations

import asyncio

import pytest

from .driver import AmqpDriver, MemoryDriver
from .scenarios import SCENARIOS, Scenario


async def observe(driver: AmqpDriver | MemoryDriver, scenario: Scenario) -> object:
    async with driver:
        return await scenario(driver)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
async def test_memory_broker_observes_like_rabbitmq(
    differential_url: str, scenario: Scenario
) -> None:
    # Both at once: most scenarios spend their time waiting (TTLs, "nothing more comes").
    rabbitmq, memory = await asyncio.gather(
        observe(AmqpDriver(differential_url), scenario), observe(MemoryDriver(), scenario)
    )
    assert memory == rabbitmq
