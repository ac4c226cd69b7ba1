"""The command line's exit codes, and the one error type its commands raise to end with one.

Every failure the user can fix ends with a single line on stderr and one of these codes, never a
traceback.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EXIT_BROKER",
    "EXIT_FOUND_PROBLEMS",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
]

EXIT_OK: Final = 0
# The command ran and found or left something wrong: `check` found a difference, a replay
# stopped on an unroutable message, a worker of `run` failed, a service stopped on an error.
EXIT_FOUND_PROBLEMS: Final = 1
# Bad input: arguments, an APP that cannot be loaded, a bad URL, a setup the library refuses.
EXIT_USAGE: Final = 2
# The broker could not be reached (refused, unknown host, bad credentials, timeout).
EXIT_BROKER: Final = 3
# The broker answered, but the queue asked for does not exist.
EXIT_NOT_FOUND: Final = 4
EXIT_INTERRUPTED: Final = 130


class CliError(Exception):
    """Ends the command with ``message`` on stderr (one line) and exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
