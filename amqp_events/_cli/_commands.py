"""What each amqp-events command does with its parsed arguments: ``cmd_<command>(args)``,
returning the exit code.

The modules doing the work are imported by the command that needs them, so ``--help`` and a
usage error do not pay for aio-pika or an APP's imports.
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
from .._url import URL_ENVIRONMENT_VARIABLE as URL_ENV
from .._url import check_urls, redact
from ._errors import EXIT_FOUND_PROBLEMS, CliError

__all__ = [
    "cmd_asyncapi",
    "cmd_check",
    "cmd_demo",
    "cmd_dlq",
    "cmd_publish",
    "cmd_run",
    "cmd_topology",
]


def _out(text: str) -> None:
    print(text, flush=True)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _log_to_stderr(level: int | str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _url_of(args: argparse.Namespace) -> str | None:
    """--url, else $AMQP_URL, else None; made the APP's default (AMQP_URL) when given."""
    from ._app import use_url

    if args.url is not None:
        return use_url(args.url)
    environment = os.environ.get(URL_ENV, "").strip()
    return use_url(environment, URL_ENV) if environment else None


def cmd_run(args: argparse.Namespace) -> int:
    from . import _run as run

    _log_to_stderr(args.log_level.upper())
    url = _url_of(args) if args.url is not None else None
    if args.reload and args.workers > 1:
        raise CliError("run: --reload and --workers are exclusive (reload runs one process)")
    freeze = not args.no_gc_freeze
    if args.reload:
        return run.run_reloading(args.app, url, args.log_level, gc_freeze=freeze)
    if args.workers > 1:
        return run.run_workers(args.app, url, args.workers, args.log_level, gc_freeze=freeze)
    return asyncio.run(run.serve(args.app, url, gc_freeze=freeze))


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


def cmd_topology(args: argparse.Namespace) -> int:
    from ._topology import as_json, as_mermaid, as_text

    models = _models(args.apps)
    if args.format == "json":
        _out(json.dumps(as_json(models), indent=2, default=str))
    elif args.format == "mermaid":
        sys.stdout.write(as_mermaid(models))
    else:
        sys.stdout.write(as_text(models))
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
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


def cmd_dlq(args: argparse.Namespace) -> int:
    from ._dlq_inspect import list_dead_letters, show
    from ._dlq_purge import ask, purge
    from ._dlq_replay import replay

    queue: str = args.queue
    actions: dict[str, Callable[[Any], Awaitable[int]]] = {
        "list": lambda c: list_dead_letters(
            c, queue, limit=args.limit, reason=args.reason, as_json=args.json, out=_out
        ),
        "show": lambda c: show(
            c,
            queue,
            position=args.position,
            message_id=args.message_id,
            as_json=args.json,
            out=_out,
        ),
        "replay": lambda c: replay(
            c,
            queue,
            limit=args.limit,
            reason=args.reason,
            dry_run=args.dry_run,
            target=args.to,
            out=_out,
            progress=_progress,
        ),
        "purge": lambda c: purge(c, queue, yes=args.yes, confirm=ask, out=_out),
    }
    return _broker_command(args, f"dlq {args.action}", actions[args.action])


def cmd_check(args: argparse.Namespace) -> int:
    from ._app import load_app
    from ._broker import broker_url, check_service, open_broker, server_version
    from ._service import describe
    from ._tables import table

    url = broker_url(_url_of(args), "check")

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


def cmd_demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    _log_to_stderr(logging.INFO if args.verbose else logging.WARNING)
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


def cmd_publish(args: argparse.Namespace) -> int:
    from ._broker import broker_url
    from ._publish import parse_body, parse_headers, publish_one

    url = broker_url(_url_of(args), "publish")
    body = parse_body(args.json_body)
    headers = parse_headers(args.header)
    message_id = asyncio.run(
        publish_one(
            url,
            args.exchange,
            args.routing_key,
            body,
            headers,
            service=args.service,
            mandatory=args.mandatory,
        )
    )
    _out(f"published {args.routing_key!r} to {args.exchange!r}: message id {message_id}")
    return 0
