"""Options shared by several commands, and the parsing of values typer cannot check itself."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

import typer

from forebay.backends import DEFAULT_URL
from forebay.cli.output import EXIT_USAGE, fail
from forebay.job import JobFilter, JobState

__all__ = [
    "AppOption",
    "CancelledRetentionOption",
    "CompletedRetentionOption",
    "DeadRetentionOption",
    "ErrorTypeOption",
    "IdsOption",
    "JsonOption",
    "LimitOption",
    "QueueOption",
    "RunFilterOption",
    "SinceOption",
    "TenantOption",
    "UntilOption",
    "UrlOption",
    "dead_filter",
    "parse_json",
    "parse_time",
    "seconds",
]

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        show_default=False,
        metavar="URL",
        help="Backend URL: sqlite:///path.db, postgresql://..., redis://... "
        f"(default: FOREBAY_URL, else {DEFAULT_URL})",
    ),
]
CompletedRetentionOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        metavar="SECONDS",
        show_default=False,
        help="Keep completed jobs this long, for queues that set no retention of their own "
        "(env FOREBAY_COMPLETED_RETENTION; default 3600).",
    ),
]
DeadRetentionOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        metavar="SECONDS",
        show_default=False,
        help="Keep dead jobs this long, for queues that set no retention of their own "
        "(env FOREBAY_DEAD_RETENTION; default 604800, a week).",
    ),
]
CancelledRetentionOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        metavar="SECONDS",
        show_default=False,
        help="Keep cancelled jobs this long, for queues that set no retention of their own "
        "(env FOREBAY_CANCELLED_RETENTION; default 86400, a day).",
    ),
]


def seconds(value: float | None) -> timedelta | None:
    """A retention flag's seconds as a timedelta (None: not given)."""
    return None if value is None else timedelta(seconds=value)


JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout instead of tables."),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        metavar="MODULE:ATTR",
        help="Your Forebay app (e.g. myapp:app), so its queue declarations (max_depth) apply.",
    ),
]
QueueOption = Annotated[
    str | None, typer.Option("--queue", "-q", metavar="QUEUE", help="Only this queue.")
]
RunFilterOption = Annotated[
    str | None,
    typer.Option("--run-id", "--run", metavar="RUN", help="Only the jobs of this run."),
]
ErrorTypeOption = Annotated[
    str | None,
    typer.Option(
        "--error-type",
        metavar="TYPE",
        help="Only jobs whose last error has this type, e.g. PermanentError or TimeoutError.",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="ISO",
        help="Only jobs updated at or after this time, e.g. 2026-11-22T09:00Z.",
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", metavar="ISO", help="Only jobs updated before this time."),
]
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", metavar="TENANT", help="Only the jobs of this tenant."),
]
LimitOption = Annotated[
    int, typer.Option("--limit", "-n", min=1, max=10_000, help="Show at most this many jobs.")
]
IdsOption = Annotated[
    list[int] | None,
    typer.Option("--id", metavar="ID", help="Only these job ids (repeat the option)."),
]


def parse_json(text: str, what: str) -> object:
    """Parse a JSON argument, or exit with a usage error that says what is wrong."""
    try:
        return json.loads(text)
    except ValueError as exc:
        hint = "quote it for the shell, e.g. '{\"id\": 7}'"
        fail(f"{what} is not valid JSON ({exc}); {hint}", EXIT_USAGE)


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time with a timezone (``Z`` or ``+02:00``), or None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO 8601 time, e.g. 2026-11-22T09:00:00Z", EXIT_USAGE)
    if parsed.tzinfo is None:
        fail(
            f"{option} {value!r} has no timezone; add Z for UTC or an offset like +02:00",
            EXIT_USAGE,
        )
    return parsed


def dead_filter(
    queue: str | None,
    error_type: str | None,
    since: str | None,
    until: str | None,
    ids: list[int] | None = None,
    tenant: str | None = None,
) -> JobFilter:
    """The filter of ``forebay dead ls|replay|purge``: dead jobs that match every option."""
    return JobFilter(
        queue=queue,
        state=JobState.DEAD,
        error_type=error_type,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        ids=tuple(ids) if ids else None,
        tenant=tenant,
    )
