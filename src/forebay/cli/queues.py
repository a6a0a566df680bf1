"""``forebay queue pause|resume|set|ls``: a queue's stored settings, obeyed by every process.

Settings live in the job store (:mod:`forebay.queue_settings`): a paused queue is leased by no
worker on any host within a second (enqueues are still accepted), and its ``max_depth`` holds
for every producer.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import JsonOption, UrlOption
from forebay.cli.output import EXIT_USAGE, fail, format_time, print_json, stdout
from forebay.cli.session import make_app, run
from forebay.queue_settings import KEEP, Keep, QueueSettings

__all__ = ["queue"]

queue = typer.Typer(
    help="Pause, resume and configure queues, for every worker and producer.",
    no_args_is_help=True,
)

QueueArgument = Annotated[str, typer.Argument(metavar="QUEUE", help="The queue's name.")]


@queue.command("pause")
def pause(name: QueueArgument, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Stop every worker leasing QUEUE (within a second, on every host); enqueues go on."""
    _show(run(_set(make_app(url), name, paused=True)), as_json, "paused")


@queue.command("resume")
def resume(name: QueueArgument, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Let workers lease QUEUE again."""
    _show(run(_set(make_app(url), name, paused=False)), as_json, "resumed")


@queue.command("set")
def set_(
    name: QueueArgument,
    max_depth: Annotated[
        int | None,
        typer.Option(
            "--max-depth",
            metavar="N",
            min=1,
            help="Unfinished jobs the queue may hold; every producer is refused beyond.",
        ),
    ] = None,
    no_max_depth: Annotated[
        bool, typer.Option("--no-max-depth", help="Remove the queue's depth limit.")
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store QUEUE's settings (what is not given stays as stored)."""
    if max_depth is not None and no_max_depth:
        fail("give --max-depth N or --no-max-depth, not both", EXIT_USAGE)
    if max_depth is None and not no_max_depth:
        fail("nothing to set: give --max-depth N or --no-max-depth", EXIT_USAGE)
    depth: int | Keep | None = None if no_max_depth else max_depth
    _show(run(_set(make_app(url), name, max_depth=depth)), as_json, "set")


@queue.command("ls")
def ls(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The queues with stored settings (the flow limits are written by the workers)."""
    found = run(_settings(make_app(url)))
    if as_json:
        print_json([s.to_dict() for s in found])
        return
    if not found:
        stdout().print("no queue has stored settings (none paused, no max_depth, no limits)")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("queue", "paused", "max depth", "updated"):
        table.add_column(column, no_wrap=True)
    table.add_column("limits", overflow="fold")
    for s in found:
        table.add_row(
            s.queue,
            "[bold yellow]paused[/]" if s.paused else "no",
            "" if s.max_depth is None else str(s.max_depth),
            format_time(s.updated_at),
            Text(s.limits.describe() if s.limits.active else ""),
        )
    stdout().print(table)


async def _set(
    app: Forebay, name: str, *, paused: bool | None = None, max_depth: int | Keep | None = KEEP
) -> QueueSettings:
    async with app:
        return await app.set_queue(name, paused=paused, max_depth=max_depth)


async def _settings(app: Forebay) -> list[QueueSettings]:
    async with app:
        return list((await app.queue_settings()).values())


def _show(saved: QueueSettings, as_json: bool, done: str) -> None:
    if as_json:
        print_json(saved.to_dict())
        return
    state = "paused" if saved.paused else "not paused"
    depth = "no max_depth" if saved.max_depth is None else f"max_depth {saved.max_depth}"
    stdout().print(f"queue {saved.queue} {done}: {state}, {depth}")
