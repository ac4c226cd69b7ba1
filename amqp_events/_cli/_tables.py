"""Plain-text tables for a terminal: a header row and columns padded to their widest cell."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_arguments", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows under their headers, columns separated by two spaces, no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines
    )


def format_arguments(arguments: Mapping[str, Any]) -> str:
    """``{"x-expires": 432000000}`` as ``x-expires=432000000``; ``-`` for none."""
    if not arguments:
        return "-"
    return " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in arguments.items())
