"""``python -m benchmarks.profile WORKLOAD``: one long amqp-events run to put under a profiler.

    py-spy record -o publish.svg -- .venv/bin/python -m benchmarks.profile publish-pipelined
    py-spy record -o consume.svg -- .venv/bin/python -m benchmarks.profile consume

Only amqp-events' own work runs in this process: for ``consume``, a child process fills the queue
first, so that the filling does not show in the profile. Like the benchmark, it works in a vhost
of its own and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

from .broker import BenchBroker, prefill
from .common import Sample, queue_name
from .workloads_events import consume, publish_pipelined, publish_sequential

WORKLOADS = {
    "publish-sequential": publish_sequential,
    "publish-pipelined": publish_pipelined,
    "consume": consume,
}


def _prefill(url: str, queue: str, messages: int) -> None:
    asyncio.run(prefill(url, queue, messages))


async def _profiled(broker: BenchBroker, workload: str, messages: int) -> Sample:
    service = f"bench-profile-{workload}"
    queue = queue_name(service)
    if workload == "consume":
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(_prefill, broker.url, queue, messages).result()
    else:
        await broker.prepare_queue(queue)  # routed and stored, as in the benchmark
    try:
        return await WORKLOADS[workload](broker.url, service, messages)
    finally:
        await broker.delete_queue(queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--url", help="broker URL (AMQP_URL, else the local RabbitMQ)")
    parser.add_argument("--lock", metavar="PATH", help="hold flock(PATH) for the whole run")
    args = parser.parse_args(argv)
    broker = BenchBroker(args.url, args.lock)
    broker.open()
    try:
        with broker.lock():
            sample = asyncio.run(_profiled(broker, args.workload, args.messages))
    finally:
        broker.close()
    print(
        f"{args.workload}: {sample.rate:,.0f} msg/s, {sample.cpu_us:,.1f} µs CPU/msg, "
        f"{sample.received}/{sample.messages} received"
    )
    return 0 if sample.received == sample.messages else 1


if __name__ == "__main__":
    sys.exit(main())
