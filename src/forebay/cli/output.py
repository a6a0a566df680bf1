"""What the CLI prints: rich for people, one JSON document for programs, one line per error.

* Human output goes to stdout through a rich console (tables, colours on a terminal).
* ``--json`` output is one JSON document on stdout, nothing else on stdout.
* Errors are one line on stderr starting with ``error:`` and exit code 1 (2 for a bad
  argument), never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from functools import cache
from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from forebay.job import JSON

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "fail",
    "format_age",
    "format_ago",
    "format_time",
    "print_json",
    "stderr",
    "stdout",
]

EXIT_ERROR = 1
"""Something went wrong: unknown job, backend down, refused enqueue."""
EXIT_USAGE = 2
"""The command line itself is wrong: bad JSON, bad time, conflicting options."""


_PIPE_WIDTH = 200
"""Columns when stdout is not a terminal (a pipe, a file) and COLUMNS is unset: wide enough
that tables are not truncated for grep and less."""


@cache
def stdout() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPE_WIDTH
    return console


@cache
def stderr() -> Console:
    return Console(stderr=True)


def print_json(document: JSON) -> None:
    """Write one JSON document to stdout (``--json`` output)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    line = " ".join(message.split())  # one line, whatever the message holds
    text = Text.assemble(("error:", "bold red"), " ", line)
    stderr().print(text, soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def format_time(value: datetime | None, now: datetime | None = None) -> str:
    """``2026-11-22 10:00:03Z (12s ago)``; empty for None."""
    if value is None:
        return ""
    stamp = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({format_ago(value, now)})"


def format_ago(value: datetime | None, now: datetime | None = None) -> str:
    """``12s ago`` (or ``in 4m05s`` for a future time); empty for None."""
    if value is None:
        return ""
    delta = ((now or datetime.now(UTC)) - value).total_seconds()
    return f"{format_age(delta)} ago" if delta >= 0 else f"in {format_age(-delta)}"


def format_age(seconds: float | None) -> str:
    """A short duration: ``850ms``, ``12s``, ``4m05s``, ``3h12m``, ``2d04h``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
