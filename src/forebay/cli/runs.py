"""``forebay runs ls|show|start|seal``: runs, groups of jobs whose completion is counted and
announced exactly once (docs/runs.md).

``forebay runs show ID --watch`` draws a live progress bar of the run's finished jobs until the
run completes (exit 0), so a script can wait for a run as ``forebay job --wait`` waits for a job;
interrupted (Ctrl-C, SIGTERM) before that, it exits 5, "not finished", as ``job --wait`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Annotated

import rich.json
import typer
from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import JsonOption, UrlOption, parse_json
from forebay.cli.output import EXIT_USAGE, fail, format_ago, format_time, print_json, stdout
from forebay.cli.session import Use, make_app, run
from forebay.cli.store import shown
from forebay.errors import InvalidPayload
from forebay.flow import check_tenant
from forebay.job import JSON
from forebay.runs import Run, RunState

__all__ = ["EXIT_NOT_COMPLETE", "counts_table", "runs", "runs_table"]

EXIT_NOT_COMPLETE = 5
"""``runs show --watch`` stopped before the run completed (as ``job --wait`` uses 5)."""

runs = typer.Typer(
    help="Runs: groups of jobs counted, and announced once complete. List, show, start, seal.",
    no_args_is_help=True,
)

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="The run's id.")]

COUNTS = (
    ("waiting", "blue"),
    ("queued", "cyan"),
    ("running", "yellow"),
    ("completed", "green"),
    ("dead", "bold red"),
    ("cancelled", "dim"),
)
"""A run's counts, in the order of a job's life, with the styles of :mod:`forebay.cli.jobs`."""

RUN_STATE_STYLES = {RunState.OPEN: "cyan", RunState.SEALED: "yellow", RunState.COMPLETED: "green"}


@runs.command("ls")
def list_runs(
    state: Annotated[
        RunState | None, typer.Option("--state", "-s", help="Only runs in this state.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="Show at most this many runs.")
    ] = 50,
    before_id: Annotated[
        str | None,
        typer.Option(metavar="RUN", help="Only runs started before this one: the next page."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(metavar="TENANT", help="Only the runs of this tenant.")
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first, with their progress."""
    app = make_app(url, use=Use.READ)
    found = run(_list(app, state, limit, before_id, tenant), app)
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    if not found:
        stdout().print(f"no runs match in {shown(app.url)}", highlight=False)
        return
    stdout().print(runs_table(found))
    if len(found) == limit:
        stdout().print(f"more with --before-id {found[-1].id}", style="dim")


async def _list(
    app: Forebay, state: RunState | None, limit: int, before_id: str | None, tenant: str | None
) -> list[Run]:
    async with app:
        return await app.list_runs(state=state, limit=limit, before_id=before_id, tenant=tenant)


def runs_table(found: Sequence[Run]) -> Table:
    """One row per run: its state, how many of its jobs finished, and its counts (and its
    tenant, when some run has one)."""
    tenants = any(r.tenant is not None for r in found)
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="ellipsis", max_width=30)
    if tenants:
        table.add_column("tenant", no_wrap=True)
    table.add_column("state")
    table.add_column("finished", justify="right")
    for name, style in COUNTS:
        table.add_column(name, justify="right", style=style)
    table.add_column("started")
    for r in found:
        table.add_row(
            r.id,
            r.name or "",
            *([r.tenant or ""] if tenants else []),
            run_state_text(r.state),
            f"{r.finished}/{r.total}",
            *(str(getattr(r, name)) for name, _ in COUNTS),
            format_ago(r.created_at),
        )
    return table


def run_state_text(state: RunState) -> Text:
    return Text(str(state), style=RUN_STATE_STYLES.get(state, ""))


@runs.command("show")
def show(
    run_id: RunArgument,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Draw a live progress bar until the run completes (exit 0); stopped before "
            "that (Ctrl-C), exit 5.",
        ),
    ] = False,
    interval_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds between refreshes with --watch.")
    ] = 1.0,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a run: its state, times, meta and its counts of jobs per state."""
    if watch and as_json:
        fail("--watch draws a progress bar; for JSON run runs show --json in a loop", EXIT_USAGE)
    app = make_app(url, use=Use.READ)
    if watch:
        found = run(_watch(app, run_id, interval_s), app)
        stdout().print(run_details(found))
        if found.state is not RunState.COMPLETED:
            raise typer.Exit(EXIT_NOT_COMPLETE)
        return
    found = run(_get(app, run_id), app)
    if as_json:
        print_json(found.to_dict())
        return
    stdout().print(run_details(found))


async def _get(app: Forebay, run_id: str) -> Run:
    async with app:
        return await app.get_run(run_id)


def run_details(r: Run) -> RenderableType:
    """The run's fields, then its counts."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, str | Text | rich.json.JSON | None]] = [
        ("id", r.id),
        ("name", r.name),
        ("key", r.key),
        ("tenant", r.tenant),
        ("state", run_state_text(r.state)),
        ("on complete", r.on_complete),
        ("webhook", r.webhook),
        ("started", format_time(r.created_at)),
        ("sealed", format_time(r.sealed_at) or None),
        ("completed", format_time(r.completed_at) or None),
        ("meta", rich.json.JSON.from_data(r.meta) if r.meta else None),
    ]
    for name, value in rows:
        if value is not None:
            grid.add_row(name, value)
    return Group(grid, Text(""), counts_table(r))


def counts_table(r: Run) -> Table:
    """The run's jobs per state, and the total."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, style in COUNTS:
        table.add_column(name, justify="right", style=style)
    table.add_column("total", justify="right", style="bold")
    table.add_row(*(str(getattr(r, name)) for name, _ in COUNTS), str(r.total))
    return table


async def _watch(app: Forebay, run_id: str, interval_s: float) -> Run:
    """Redraw the run's progress until it completes, or until Ctrl-C or SIGTERM; the run as
    last read."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with app:
            found = await app.get_run(run_id)
            with _progress() as progress:
                task = progress.add_task(_label(found), total=found.total or None, counts="")
                while True:
                    _draw(progress, task, found)
                    if found.state is RunState.COMPLETED or stop.is_set():
                        return found
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval_s):
                            await stop.wait()
                    found = await app.get_run(run_id)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        console=stdout(),
        auto_refresh=False,
    )


def _draw(progress: Progress, task: TaskID, found: Run) -> None:
    progress.update(
        task,
        description=_label(found),
        total=found.total or None,  # None: an empty run's bar pulses instead of showing 0/0
        completed=found.finished,
        counts=_counts_line(found),
    )
    progress.refresh()


def _label(found: Run) -> str:
    return f"{found.name or found.id} ({found.state})"


def _counts_line(found: Run) -> str:
    parts = [f"{getattr(found, name)} {name}" for name, _ in COUNTS if getattr(found, name)]
    return " · ".join(parts)


@runs.command("start")
def start(
    name: Annotated[str | None, typer.Option(help="A name people recognise the run by.")] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Idempotency key: starting a run with a stored run's key returns it."),
    ] = None,
    meta: Annotated[
        str | None,
        typer.Option(
            metavar="JSON", help="A JSON object kept with the run, e.g. '{\"crawl\": 7}'."
        ),
    ] = None,
    on_complete: Annotated[
        str | None,
        typer.Option(
            metavar="QUEUE", help="A queue that gets one job, the run's summary, once complete."
        ),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option(metavar="URL", help="An http(s) URL told run.completed, signed."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(metavar="TENANT", help="Whose run it is.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start an open run; jobs join it with ``forebay enqueue --run RUN``, then seal it."""
    given = None if meta is None else parse_json(meta, "--meta")
    if given is not None and not isinstance(given, dict):
        fail("--meta must be a JSON object, e.g. '{\"crawl\": 7}'", EXIT_USAGE)
    try:
        check_tenant(tenant)
    except InvalidPayload as exc:
        fail(f"--{exc}", EXIT_USAGE)
    app = make_app(url)
    found = run(_start(app, name, key, given, on_complete, webhook, tenant), app)
    if as_json:
        print_json({**found.to_dict(), "created": found.created})
        return
    if found.created:
        stdout().print(f"run {found.id} started (created=true)", markup=False)
    else:
        stdout().print(
            f"run {found.id} already exists with key {found.key}, state {found.state} "
            "(created=false)",
            markup=False,
        )


async def _start(
    app: Forebay,
    name: str | None,
    key: str | None,
    meta: dict[str, JSON] | None,
    on_complete: str | None,
    webhook: str | None,
    tenant: str | None,
) -> Run:
    async with app:
        return await app.start_run(
            name=name,
            key=key,
            meta=meta,
            on_complete=on_complete,
            webhook=webhook,
            tenant=tenant,
        )


@runs.command("seal")
def seal(run_id: RunArgument, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Seal a run: no more jobs join from outside (its running jobs' children still do); it
    completes once every job in it finished, at once if they all have."""
    app = make_app(url)
    found = run(_seal(app, run_id), app)
    if as_json:
        print_json(found.to_dict())
        return
    stdout().print(
        f"run {found.id} is {found.state}: {found.finished} of {found.total} jobs finished",
        markup=False,
    )


async def _seal(app: Forebay, run_id: str) -> Run:
    async with app:
        return await app.seal_run(run_id)
