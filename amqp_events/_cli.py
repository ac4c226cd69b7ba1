"""The amqp-events command line: the demo, and the installed version.

Help texts here are plain text, written for a terminal: argparse prints them as they are, so
they must not carry the reST markup of docstrings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from ._errors import AmqpEventsError, ConfigurationError
from ._url import check_urls, redact
from ._version import VERSION

__all__ = ["main"]

URL_ENV = "AMQP_URL"


def _order_count(text: str) -> int:
    """argparse type of --orders: a whole number, 0 or more."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {count}")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqp-events",
        description="Event-driven services on RabbitMQ, wire-compatible with goamqp.",
    )
    parser.add_argument("--version", action="version", version=f"amqp-events {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the order, stat and shipping services of the example",
        description="Runs three services that exchange events and exits 0 when every event "
        f"arrived. Uses the in-memory broker unless --url or {URL_ENV} names a RabbitMQ.",
    )
    demo.add_argument(
        "--url",
        help=f"broker URL (default: ${URL_ENV}, else memory://)",
    )
    demo.add_argument(
        "--orders",
        type=_order_count,
        default=3,
        metavar="N",
        help="orders to create, 0 or more (default 3; 0 starts and stops the services only)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    demo.set_defaults(command_parser=demo)  # for errors found after parsing: its usage line
    return parser


def _demo_url(parser: argparse.ArgumentParser, given: str | None) -> str:
    """The broker URL of the demo: --url, else $AMQP_URL, else memory://; checked here, so a
    bad one is reported naming where it came from."""
    if given is not None:
        url, source = given, "--url"
    elif os.environ.get(URL_ENV):
        url, source = os.environ[URL_ENV], URL_ENV
    else:
        url, source = "memory://", "default"
    try:
        check_urls(url)
    except ConfigurationError as exc:
        parser.error(f"{source}: {exc}")  # exits 2
    return url


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from ._demo import run_demo

        url = _demo_url(args.command_parser, args.url)
        print(f"demo: broker {redact(url)}")
        try:
            ok = asyncio.run(run_demo(url, orders=args.orders))
        except AmqpEventsError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("demo interrupted", file=sys.stderr)
            return 130
        if not ok:
            print("demo failed: some events did not arrive (listed above)", file=sys.stderr)
        return 0 if ok else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
