"""``forebay schedules [delete NAME...]``: the stored schedules, with their last and next run.

A schedule is stored when a worker of the app that declares it starts (``app.schedule(...)``),
so this lists what every worker process fires, whichever app saved it; ``delete`` removes one
that no app declares any more (a worker of an app that still declares it stores it again).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from forebay.app import Forebay
from forebay.cli.options import JsonOption, UrlOption
from forebay.cli.output import fail, format_time, print_json, stdout
from forebay.cli.session import make_app, run
from forebay.job import utcnow
from forebay.schedules import Schedule

__all__ = ["schedules"]

schedules = typer.Typer(
    name="schedules",
    help="Schedules: jobs enqueued on a cron expression or an interval. List or delete them.",
    invoke_without_command=True,
    rich_markup_mode="markdown",
)


@schedules.callback()
def ls(ctx: typer.Context, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the stored schedules: queue, cron or interval, timezone, last and next run."""
    if ctx.invoked_subcommand is not None:
        return
    found = run(_list(make_app(url)))
    now = utcnow()
    if as_json:
        print_json([s.to_dict(now) for s in found])
        return
    if not found:
        stdout().print("no schedules yet (a worker stores those its app declares)")
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("name", "queue", "cron / every", "tz", "next run", "last run"):
        table.add_column(column, no_wrap=column in ("name", "queue"))
    for s in found:
        last = format_time(s.last_tick, now) if s.last_tick else "never"
        table.add_row(s.name, s.queue, s.spec, s.tz, format_time(s.next_run(now), now), last)
    stdout().print(table)


@schedules.command("delete")
def delete(
    names: Annotated[list[str], typer.Argument(help="Names of the schedules to delete.")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete stored schedules (their jobs stay). Exits 1 when none of them exists."""
    deleted = run(_delete(make_app(url), names))
    if as_json:
        print_json({"deleted": list(deleted)})
    elif deleted:
        stdout().print(f"deleted {len(deleted)} schedule(s): {', '.join(deleted)}")
    if not deleted:
        fail(f"no schedule named {', '.join(names)}")


async def _list(app: Forebay) -> list[Schedule]:
    async with app:
        return await app.list_schedules()


async def _delete(app: Forebay, names: list[str]) -> list[str]:
    async with app:
        return await app.delete_schedules(*names)
