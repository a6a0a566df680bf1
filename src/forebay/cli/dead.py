"""``forebay dead ls|replay|purge``: inspect dead letters, put them back to queued, delete them.

The three commands take the same filters (queue, error type, time range of the last update),
so what ``ls`` shows is what ``replay`` and ``purge`` act on.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import (
    ErrorTypeOption,
    IdsOption,
    JsonOption,
    LimitOption,
    QueueOption,
    SinceOption,
    TenantOption,
    UntilOption,
    UrlOption,
    dead_filter,
)
from forebay.cli.output import EXIT_USAGE, fail, format_ago, print_json, stdout
from forebay.cli.session import Use, make_app, run
from forebay.cli.store import shown
from forebay.job import Job, JobFilter

__all__ = ["dead"]

dead = typer.Typer(
    name="dead",
    help="Dead letters: jobs that will not be tried again. List, replay or purge them.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Only count the dead jobs that match; change nothing.")
]


@dead.command("ls")
def ls(
    queue: QueueOption = None,
    error_type: ErrorTypeOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    tenant: TenantOption = None,
    limit: LimitOption = 50,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List dead jobs, the latest death first, with their last error."""
    where = dead_filter(queue, error_type, since, until, tenant=tenant)
    app = make_app(url, use=Use.READ)
    found = run(_list(app, where, limit), app)
    if as_json:
        print_json([j.to_dict(detail=False) for j in found])
        return
    if not found:
        stdout().print(f"no dead jobs match in {shown(app.url)}", highlight=False)
        return
    stdout().print(_table(found))


async def _list(app: Forebay, where: JobFilter, limit: int) -> list[Job]:
    async with app:
        return await app.list_dead(where, limit=limit)


def _table(found: list[Job]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("queue", no_wrap=True)
    table.add_column("attempt", no_wrap=True)
    table.add_column("died", no_wrap=True)
    table.add_column("error type", no_wrap=True, style="red")
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=70)
    for j in found:
        error = (j.error or "").splitlines()
        table.add_row(
            str(j.id),
            j.queue,
            str(j.attempt),
            format_ago(j.finished_at or j.updated_at),
            j.error_type or "",
            Text(error[0] if error else ""),
        )
    return table


@dead.command("replay")
def replay(
    queue: QueueOption = None,
    error_type: ErrorTypeOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    ids: IdsOption = None,
    tenant: TenantOption = None,
    dry_run: DryRunOption = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put matching dead jobs back to queued, with fresh attempts, to run now."""
    where = dead_filter(queue, error_type, since, until, ids, tenant)
    app = make_app(url)
    count = run(_replay(app, where, dry_run), app)
    _report("replay", "replayed", count, dry_run, as_json)


async def _replay(app: Forebay, where: JobFilter, dry_run: bool) -> int:
    async with app:
        return await app.replay(where, dry_run=dry_run)


@dead.command("purge")
def purge(
    queue: QueueOption = None,
    error_type: ErrorTypeOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    ids: IdsOption = None,
    tenant: TenantOption = None,
    dry_run: DryRunOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete matching dead jobs for good. Asks first, unless --yes (or --dry-run)."""
    where = dead_filter(queue, error_type, since, until, ids, tenant)
    ask = not (yes or dry_run)
    app = make_app(url)
    count = run(_purge(app, where, dry_run=dry_run, ask=ask), app)
    _report("purge", "purged", count, dry_run, as_json)


async def _purge(app: Forebay, where: JobFilter, *, dry_run: bool, ask: bool) -> int:
    async with app:
        if ask:
            count = await app.purge(where, dry_run=True)
            if count == 0:
                return 0
            await asyncio.to_thread(_confirm, count)
        return await app.purge(where, dry_run=dry_run)


def _confirm(count: int) -> None:
    question = f"delete {count} dead job{'s' if count != 1 else ''} for good?"
    if not sys.stdin.isatty():
        fail(f"{question} There is no terminal to ask: pass --yes to confirm.", EXIT_USAGE)
    if not typer.confirm(question, default=False, err=True):
        fail("purge cancelled; nothing was deleted")


def _report(verb: str, past: str, count: int, dry_run: bool, as_json: bool) -> None:
    if as_json:
        print_json({"action": verb, "dry_run": dry_run, "count": count})
        return
    jobs = f"{count} dead job{'s' if count != 1 else ''}"
    if dry_run:
        stdout().print(f"would {verb} {jobs} (dry run: nothing changed)")
    elif count == 0:
        stdout().print("no dead jobs match")
    else:
        stdout().print(f"{past} {jobs}")
