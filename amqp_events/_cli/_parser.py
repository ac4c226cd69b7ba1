"""The amqp-events argument parser: its commands, their arguments and help texts.

Help texts here are plain text, written for a terminal: argparse prints them as they are, so
they must not carry the reST markup of docstrings. Each command's parser names its handler in
``_commands`` (``args.handler``) and itself (``args.command_parser``, for usage errors).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._url import URL_ENVIRONMENT_VARIABLE as URL_ENV
from .._version import VERSION
from ._commands import (
    cmd_asyncapi,
    cmd_check,
    cmd_demo,
    cmd_dlq,
    cmd_publish,
    cmd_run,
    cmd_topology,
)

__all__ = ["build_parser"]


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, ``minimum`` or more."""

    def parse(text: str) -> int:
        try:
            count = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if count < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {count}")
        return count

    return parse


_positive = _whole_number(1)
_order_count = _whole_number(0)  # --orders of demo

URL_HELP = f"broker URL, amqp://user:password@host:port/vhost (default: ${URL_ENV})"
APP_HELP = (
    "module:attribute, the attribute a Connection or a function returning one "
    "(imported with the current directory on the path)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqp-events",
        description="Event-driven services on RabbitMQ, wire-compatible with goamqp.",
        epilog="Exit codes: 0 ok, 1 problems found (check, replay, a failed worker), 2 bad "
        "input (arguments, APP, URL), 3 broker unreachable, 4 queue not found, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"amqp-events {VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(subparsers)
    _add_topology(subparsers)
    _add_asyncapi(subparsers)
    _add_dlq(subparsers)
    _add_check(subparsers)
    _add_publish(subparsers)
    _add_demo(subparsers)
    return parser


Subparsers = Any  # argparse's _SubParsersAction, private in typeshed
Handler = Callable[[argparse.Namespace], int]


def _command(
    subparsers: Subparsers, name: str, handler: Handler, *, help: str, description: str
) -> argparse.ArgumentParser:
    """The parser of command ``name``, naming its ``handler`` and itself (for usage errors)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description
    )
    parser.set_defaults(handler=handler, command_parser=parser)
    return parser


def _add_run(subparsers: Subparsers) -> None:
    run = _command(
        subparsers,
        "run",
        cmd_run,
        help="serve a service until SIGINT or SIGTERM",
        description="Starts the APP's connection (its topology, consumers and publishers) and "
        "serves until SIGINT or SIGTERM, then closes gracefully: running handlers finish first.",
    )
    run.add_argument("app", metavar="APP", help=APP_HELP)
    run.add_argument("--url", help=f"broker URL; overrides the APP's own (default: ${URL_ENV})")
    run.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="processes, each running the APP: competing consumers on its queues (default 1)",
    )
    run.add_argument(
        "--reload",
        action="store_true",
        help="restart when a .py file under the APP's directory changes (needs the cli "
        "extra: pip install 'amqp-events[cli]')",
    )
    run.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the cyclic GC as it is; by default, once the APP has started, what "
        "start-up made is frozen out of its reach (gc.freeze), which saves CPU per message",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default info)",
    )


def _add_publish(subparsers: Subparsers) -> None:
    publish = _command(
        subparsers,
        "publish",
        cmd_publish,
        help="send one event by hand, with the envelope a service gives it",
        description="Publishes JSON to EXCHANGE with routing key KEY, persistent and confirmed, "
        "with a fresh message id, the time and the CloudEvents headers, as a service would. "
        "Mandatory by default: an event no queue takes is reported (exit 1), not dropped.",
    )
    publish.add_argument("exchange", metavar="EXCHANGE", help="e.g. events.topic.exchange")
    publish.add_argument("routing_key", metavar="KEY", help="e.g. Order.Created")
    publish.add_argument("json_body", metavar="JSON", help='the event, e.g. \'{"id": "1"}\'')
    publish.add_argument("--url", help=URL_HELP)
    publish.add_argument(
        "--service",
        default="amqp-events-cli",
        help="the service it is sent as: its service header and source (default amqp-events-cli)",
    )
    publish.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header to send; repeat for more; a JSON value (1, true) is sent as that",
    )
    publish.add_argument(
        "--no-mandatory",
        dest="mandatory",
        action="store_false",
        help="send even if no queue is bound for KEY (the broker drops it)",
    )


def _add_topology(subparsers: Subparsers) -> None:
    topology = _command(
        subparsers,
        "topology",
        cmd_topology,
        help="show the exchanges, queues and bindings services declare (no broker needed)",
        description="Shows what each APP declares, consumes and publishes, read from its setup "
        "without a broker. Several APPs draw the whole system.",
    )
    topology.add_argument("apps", nargs="+", metavar="APP", help=APP_HELP)
    topology.add_argument(
        "--format",
        choices=["text", "mermaid", "json"],
        default="text",
        help="text tables (default), a mermaid flowchart, or JSON",
    )


def _add_asyncapi(subparsers: Subparsers) -> None:
    asyncapi = _command(
        subparsers,
        "asyncapi",
        cmd_asyncapi,
        help="write an AsyncAPI 3.0 document of services",
        description="Writes an AsyncAPI 3.0.0 document of the APPs: their channels, "
        "operations and message schemas (from the pydantic models), with AMQP bindings.",
    )
    asyncapi.add_argument("apps", nargs="+", metavar="APP", help=APP_HELP)
    asyncapi.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    asyncapi.add_argument(
        "--yaml",
        action="store_true",
        help="YAML instead of JSON (needs the cli extra: pip install 'amqp-events[cli]')",
    )
    asyncapi.add_argument("--title", help="the document's title (default: the services' names)")
    asyncapi.add_argument(
        "--app-version",
        default="1.0.0",
        metavar="VERSION",
        help="the document's info.version (default 1.0.0)",
    )


def _add_dlq(subparsers: Subparsers) -> None:
    dlq = subparsers.add_parser(
        "dlq",
        help="list, show, replay or purge dead letters",
        description="Dead letters of a queue. QUEUE is the service queue or its .dlq: either "
        "works. Nothing is removed by list or show.",
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument("queue", metavar="QUEUE", help="the service queue or its .dlq")
        action.add_argument("--url", help=URL_HELP)

    listing = _command(
        actions,
        "list",
        cmd_dlq,
        help="list dead letters: reason, exception, attempts, age",
        description="Lists the dead letters, oldest first, with their reason, exception, "
        "attempt count and age; they stay in the queue.",
    )
    common(listing)
    listing.add_argument("--limit", type=_positive, default=50, metavar="N", help="default 50")
    listing.add_argument("--reason", help="only this reason (handler-failed, undecodable, ...)")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")

    show = _command(
        actions,
        "show",
        cmd_dlq,
        help="show one dead letter in full",
        description="Shows one dead letter in full: its headers, properties and body.",
    )
    common(show)
    show.add_argument(
        "position",
        nargs="?",
        type=_positive,
        default=1,
        metavar="N",
        help="its position as list shows it (default 1, the oldest)",
    )
    show.add_argument("--id", dest="message_id", help="the dead letter with this message id")
    show.add_argument("--json", action="store_true", help="JSON for scripts")

    replay = _command(
        actions,
        "replay",
        cmd_dlq,
        help="send dead letters back to be handled again",
        description="Sends dead letters back with a fresh attempt count: each copy is "
        "published persistent, mandatory and confirmed by the broker before its dead copy is "
        "acknowledged. By default a copy goes back to the queue that gave up only (--to "
        "queue), so other services bound to the same key do not get it twice; --to exchange "
        "publishes to the original exchange and routing key instead. An unroutable copy stops "
        "the replay and stays in the dead-letter queue.",
    )
    common(replay)
    replay.add_argument("--limit", type=_positive, metavar="N", help="replay at most N")
    replay.add_argument("--reason", help="only dead letters with this reason")
    replay.add_argument(
        "--to",
        choices=["queue", "exchange"],
        default="queue",
        help="queue (default): back to the queue that gave up; exchange: to the original "
        "exchange and routing key, as first published (every bound queue gets it)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed, change nothing"
    )

    purge = _command(
        actions,
        "purge",
        cmd_dlq,
        help="delete every dead letter",
        description="Deletes every message of the dead-letter queue, after a confirmation.",
    )
    common(purge)
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _add_check(subparsers: Subparsers) -> None:
    check = _command(
        subparsers,
        "check",
        cmd_check,
        help="check the broker against what a service declares",
        description="Is the broker reachable, and do the APP's exchanges and queues exist with "
        "the arguments it declares? Creates nothing. A mismatch is named as the broker's "
        "PRECONDITION_FAILED would name it. Exits 1 when something is missing or differs.",
    )
    check.add_argument("app", metavar="APP", help=APP_HELP)
    check.add_argument("--url", help=URL_HELP)
    check.add_argument("--json", action="store_true", help="JSON for scripts")


def _add_demo(subparsers: Subparsers) -> None:
    demo = _command(
        subparsers,
        "demo",
        cmd_demo,
        help="run the order, stat and shipping services of the example",
        description="Runs three services that exchange events and exits 0 when every event "
        f"arrived. Uses the in-memory broker unless --url or {URL_ENV} names a RabbitMQ.",
    )
    demo.add_argument("--url", help=f"broker URL (default: ${URL_ENV}, else memory://)")
    demo.add_argument(
        "--orders",
        type=_order_count,
        default=3,
        metavar="N",
        help="orders to create, 0 or more (default 3; 0 starts and stops the services only)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
