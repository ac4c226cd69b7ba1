"""The ``amqp-events`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from ._errors import AmqpEventsError
from ._url import redact

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amqp-events", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the order/stat/shipping example",
        description="Runs three services that exchange events; exits 0 when all arrived. "
        "Uses the in-memory broker unless --url or AMQP_URL names a RabbitMQ.",
    )
    demo.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", "memory://"),
        help="broker URL (default: $AMQP_URL, else memory://)",
    )
    demo.add_argument("--orders", type=int, default=3, help="orders to create (default 3)")
    demo.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from ._demo import run_demo

        print(f"demo: broker {redact(args.url)}")
        try:
            ok = asyncio.run(run_demo(args.url, orders=args.orders))
        except AmqpEventsError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        return 0 if ok else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
