"""The four workloads a client implements, so the runner can drive every client alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .common import Sample

__all__ = ["Client", "ConsumeWorkload", "LatencyWorkload", "PublishWorkload"]

# (broker URL, service name, messages) -> sample. The queue is queue_name(service), declared
# (and for consume, filled) by the runner beforehand.
PublishWorkload = Callable[[str, str, int], Awaitable[Sample]]
ConsumeWorkload = Callable[[str, str, int], Awaitable[Sample]]
# (broker URL, service name, messages, rate per second, warm-up messages) -> sample
LatencyWorkload = Callable[[str, str, int, float, int], Awaitable[Sample]]


@dataclass(frozen=True)
class Client:
    name: str
    publish_sequential: PublishWorkload
    publish_pipelined: PublishWorkload
    consume: ConsumeWorkload
    latency: LatencyWorkload
