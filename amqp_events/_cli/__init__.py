"""The amqp-events command line: run, topology, asyncapi, dlq, check, publish, demo, --version.

``_parser`` defines the commands and their help texts, ``_commands`` what each one does; here
``main`` runs one. Every failure a user can fix ends with one line on stderr and an exit code of
``_errors`` (0 ok, 1 problems found, 2 bad input, 3 broker unreachable, 4 queue not found, 130
interrupted), never with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .._errors import AmqpEventsError, ConfigurationError
from ._errors import EXIT_FOUND_PROBLEMS, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from ._parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
