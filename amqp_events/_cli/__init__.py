"""The amqp-events command line: run, topology, asyncapi, dlq, check, demo, --version.

Help texts here are plain text, written for a terminal: argparse prints them as they are, so
they must not carry the reST markup of docstrings. Every failure a user can fix ends with one
line on stderr and an exit code of ``_errors`` (0 ok, 1 problems found, 2 bad input, 3 broker
unreachable, 4 queue not found, 130 interrupted), never with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .._errors import AmqpEventsError, ConfigurationError
from .._url import check_urls, redact
from .._version import VERSION
from ._errors import EXIT_FOUND_PROBLEMS, EXIT_INTERRUPTED, EXIT_USAGE, CliError

__all__ = ["main"]

URL_ENV = "AMQP_URL"


def _positive(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {count}")
    return count


def _order_count(text: str) -> int:
    """argparse type of --orders: a whole number, 0 or more."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {count}")
    return count


URL_HELP = f"broker URL, amqp://user:password@host:port/vhost (default: ${URL_ENV})"
APP_HELP = (
    "module:attribute, the attribute a Connection or a function returning one "
    "(imported with the current directory on the path)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqp-events",
        description="Event-driven services on RabbitMQ, wire-compatible with goamqp.",
        epilog="Exit codes: 0 ok, 1 problems found (check, replay, a failed worker), 2 bad "
        "input (arguments, APP, URL), 3 broker unreachable, 4 queue not found, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"amqp-events {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(commands)
    _add_topology(commands)
    _add_asyncapi(commands)
    _add_dlq(commands)
    _add_check(commands)
    _add_demo(commands)
    return parser


Subparsers = Any  # argparse's _SubParsersAction, private in typeshed


def _add_run(commands: Subparsers) -> None:
    run = commands.add_parser(
        "run",
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
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default info)",
    )
    run.set_defaults(handler=_cmd_run, command_parser=run)


def _add_topology(commands: Subparsers) -> None:
    topology = commands.add_parser(
        "topology",
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
    topology.set_defaults(handler=_cmd_topology, command_parser=topology)


def _add_asyncapi(commands: Subparsers) -> None:
    asyncapi = commands.add_parser(
        "asyncapi",
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
    asyncapi.set_defaults(handler=_cmd_asyncapi, command_parser=asyncapi)


def _add_dlq(commands: Subparsers) -> None:
    dlq = commands.add_parser(
        "dlq",
        help="list, show, replay or purge dead letters",
        description="Dead letters of a queue. QUEUE is the service queue or its .dlq: either "
        "works. Nothing is removed by list or show.",
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument("queue", metavar="QUEUE", help="the service queue or its .dlq")
        action.add_argument("--url", help=URL_HELP)
        action.set_defaults(handler=_cmd_dlq, command_parser=action)

    listing = actions.add_parser(
        "list",
        help="list dead letters: reason, exception, attempts, age",
        description="Lists the dead letters, oldest first, with their reason, exception, "
        "attempt count and age; they stay in the queue.",
    )
    common(listing)
    listing.add_argument("--limit", type=_positive, default=50, metavar="N", help="default 50")
    listing.add_argument("--reason", help="only this reason (handler-failed, undecodable, ...)")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")

    show = actions.add_parser(
        "show",
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

    replay = actions.add_parser(
        "replay",
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

    purge = actions.add_parser(
        "purge",
        help="delete every dead letter",
        description="Deletes every message of the dead-letter queue, after a confirmation.",
    )
    common(purge)
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _add_check(commands: Subparsers) -> None:
    check = commands.add_parser(
        "check",
        help="check the broker against what a service declares",
        description="Is the broker reachable, and do the APP's exchanges and queues exist with "
        "the arguments it declares? Creates nothing. A mismatch is named as the broker's "
        "PRECONDITION_FAILED would name it. Exits 1 when something is missing or differs.",
    )
    check.add_argument("app", metavar="APP", help=APP_HELP)
    check.add_argument("--url", help=URL_HELP)
    check.add_argument("--json", action="store_true", help="JSON for scripts")
    check.set_defaults(handler=_cmd_check, command_parser=check)


def _add_demo(commands: Subparsers) -> None:
    demo = commands.add_parser(
        "demo",
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
    demo.set_defaults(handler=_cmd_demo, command_parser=demo)


# -- commands ---------------------------------------------------------------------------------


def _out(text: str) -> None:
    print(text, flush=True)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _url_of(args: argparse.Namespace) -> str | None:
    """--url, else $AMQP_URL, else None; made the APP's default (AMQP_URL) when given."""
    from ._app import use_url

    if args.url is not None:
        return use_url(args.url)
    environment = os.environ.get(URL_ENV, "").strip()
    return use_url(environment, URL_ENV) if environment else None


def _cmd_run(args: argparse.Namespace) -> int:
    from . import _run as run

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    url = _url_of(args) if args.url is not None else None
    if args.reload and args.workers > 1:
        raise CliError("run: --reload and --workers are exclusive (reload runs one process)")
    if args.reload:
        return run.run_reloading(args.app, url, args.log_level)
    if args.workers > 1:
        return run.run_workers(args.app, url, args.workers, args.log_level)
    return asyncio.run(run.serve(args.app, url))


def _models(apps: Sequence[str]) -> list[Any]:
    """The services of ``apps``. Reading a setup needs no broker: an APP whose connection takes
    its URL from $AMQP_URL gets memory:// while it is loaded, if $AMQP_URL is not set."""
    from ._app import load_app
    from ._service import describe

    async def load() -> list[Any]:
        return [describe(await load_app(app)) for app in apps]

    placeholder = not os.environ.get(URL_ENV, "").strip()
    if placeholder:
        os.environ[URL_ENV] = "memory://"
    try:
        return asyncio.run(load())
    finally:
        if placeholder:
            os.environ.pop(URL_ENV, None)


def _cmd_topology(args: argparse.Namespace) -> int:
    from ._topology import as_json, as_mermaid, as_text

    models = _models(args.apps)
    if args.format == "json":
        _out(json.dumps(as_json(models), indent=2, default=str))
    elif args.format == "mermaid":
        sys.stdout.write(as_mermaid(models))
    else:
        sys.stdout.write(as_text(models))
    return 0


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    from ._asyncapi import asyncapi_document

    dump: Callable[[Any], str]
    if args.yaml:
        try:
            import yaml
        except ImportError:
            raise CliError("asyncapi --yaml needs pyyaml: pip install 'amqp-events[cli]'") from None

        def dump(data: Any) -> str:
            return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:

        def dump(data: Any) -> str:
            return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    models = _models(args.apps)
    url = os.environ.get(URL_ENV)
    document = asyncapi_document(models, title=args.title, version=args.app_version, url=url)
    text = dump(document)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--output: cannot write {args.output!r}: {exc.strerror}") from None
        _progress(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _broker_command(
    args: argparse.Namespace, command: str, work: Callable[[Any], Awaitable[int]]
) -> int:
    from ._broker import broker_url, open_broker

    url = broker_url(_url_of(args), command)

    async def go() -> int:
        async with open_broker(url) as connection:
            return await work(connection)

    return asyncio.run(go())


def _cmd_dlq(args: argparse.Namespace) -> int:
    from . import _dlq as dlq

    queue: str = args.queue
    if args.action == "list":
        return _broker_command(
            args,
            "dlq list",
            lambda c: dlq.list_dead_letters(
                c, queue, limit=args.limit, reason=args.reason, as_json=args.json, out=_out
            ),
        )
    if args.action == "show":
        return _broker_command(
            args,
            "dlq show",
            lambda c: dlq.show(
                c,
                queue,
                position=args.position,
                message_id=args.message_id,
                as_json=args.json,
                out=_out,
            ),
        )
    if args.action == "replay":
        return _broker_command(
            args,
            "dlq replay",
            lambda c: dlq.replay(
                c,
                queue,
                limit=args.limit,
                reason=args.reason,
                dry_run=args.dry_run,
                target=args.to,
                out=_out,
                progress=_progress,
            ),
        )
    return _broker_command(
        args,
        "dlq purge",
        lambda c: dlq.purge(c, queue, yes=args.yes, confirm=dlq.ask, out=_out),
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from ._broker import broker_url, check_service, open_broker, server_version
    from ._service import describe
    from ._tables import table

    url = broker_url(_url_of(args), "check")
    from ._app import load_app

    async def go() -> int:
        model = describe(await load_app(args.app))
        async with open_broker(url) as connection:
            results = await check_service(connection, model)
            version = server_version(connection)
        problems = [r for r in results if not r.ok]
        if args.json:
            _out(
                json.dumps(
                    {
                        "service": model.name,
                        "broker": redact(url),
                        "reachable": True,
                        "server": version,
                        "ok": not problems,
                        "results": [
                            {"kind": r.kind, "name": r.name, "status": r.status, "detail": r.detail}
                            for r in results
                        ],
                    },
                    indent=2,
                )
            )
        else:
            _out(f"broker {redact(url)}: reachable ({version})")
            _out(
                table(
                    ["KIND", "NAME", "STATUS", "DETAIL"],
                    [[r.kind, r.name, r.status, r.detail] for r in results],
                )
            )
            if problems:
                _out(f"{model.name}: {len(problems)} problem(s)")
            else:
                _out(f"{model.name}: ok")
        return EXIT_FOUND_PROBLEMS if problems else 0

    return asyncio.run(go())


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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    url = _demo_url(args.command_parser, args.url)
    print(f"demo: broker {redact(url)}")
    try:
        ok = asyncio.run(run_demo(url, orders=args.orders))
    except AmqpEventsError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print("demo failed: some events did not arrive (listed above)", file=sys.stderr)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"amqp-events {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"amqp-events {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AmqpEventsError as exc:  # a library error no command turned into a CliError
        print(f"amqp-events {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FOUND_PROBLEMS
    return code


if __name__ == "__main__":
    sys.exit(main())
