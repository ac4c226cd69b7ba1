"""The Go reference client sending amqp-events' envelope: the same messages on the wire.

``go-amqp091`` publishes the bare order, as a goamqp service does; amqp-events adds the
envelope to each event (docs/envelope.md: a message id, a timestamp, goamqp's ``service``
header and seven CloudEvents headers), which the broker decodes and stores with the message.
This client is ``go-amqp091`` with ``-envelope``: it adds the same properties and headers, so
the two Python-vs-Go comparisons separate what the client costs from what the envelope costs
the broker. Its consume workload reads the queue the harness filled, as ``go-amqp091`` does.
"""

from __future__ import annotations

from .client import Client
from .common import Sample
from .workloads_go import _command, _run, unavailable

__all__ = ["CLIENT", "NAME", "unavailable"]

NAME = "go-enveloped"


def _enveloped(workload: str, url: str, service: str, messages: int) -> list[str]:
    return [*_command(workload, url, service, messages), f"-envelope={service}"]


async def publish_sequential(url: str, service: str, messages: int) -> Sample:
    return await _run(_enveloped("publish-sequential", url, service, messages), messages)


async def publish_pipelined(url: str, service: str, messages: int) -> Sample:
    return await _run(_enveloped("publish-pipelined", url, service, messages), messages)


async def consume(url: str, service: str, messages: int) -> Sample:
    return await _run(_enveloped("consume", url, service, messages), messages)


async def latency(url: str, service: str, messages: int, rate: float, warmup: int) -> Sample:
    command = _enveloped("latency", url, service, messages)
    command += [f"-rate={rate}", f"-warmup={warmup}"]  # the later flag wins
    return await _run(command, messages)


CLIENT = Client(NAME, publish_sequential, publish_pipelined, consume, latency)
