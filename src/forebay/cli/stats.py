"""``forebay stats [--watch]``: counts per queue and state, once or refreshed live, with each
queue's flow limits (rate, caps across the fleet, fairness, aging) and how many of its due jobs
they hold back right now (*throttled*)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import AppOption, JsonOption, UrlOption
from forebay.cli.output import EXIT_USAGE, fail, format_age, print_json, stdout
from forebay.cli.session import Use, make_app, run
from forebay.cli.store import shown
from forebay.flow import NO_LIMITS, FlowLimits
from forebay.job import JSON, QueueCounts
from forebay.queue_settings import QueueSettings

__all__ = ["queue_limits", "running_text", "stats", "stats_table"]

_COLUMNS = (
    ("waiting", "blue"),
    ("queued", "cyan"),
    ("scheduled", ""),
    ("retrying", "yellow"),
    ("running", "yellow"),
    ("stalled", "bold magenta"),
    ("completed", "green"),
    ("dead", "bold red"),
    ("cancelled", "dim"),
)


def stats(
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh live until Ctrl-C.")
    ] = False,
    interval_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    app_ref: AppOption = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counts per queue and state, and the age of each queue's oldest due job.

    *waiting* counts the jobs waiting for their parents (``--after``).
    *scheduled* (run_at in the future) and *retrying* (after an error) are
    parts of *queued*, *stalled* (lease expired: the worker died or hangs) a part
    of *running*, not extra states.

    A queue with flow limits shows them (as its workers stored them, else as the **--app**
    declares them), *running* against its cap (``3/4``), and *throttled*: due jobs a limit
    holds back right now.
    """
    if watch and as_json:
        fail("--watch redraws a table; for JSON run stats --json in a loop", EXIT_USAGE)
    app = make_app(url, app_ref, use=Use.READ)
    if watch:
        run(_watch(app, interval_s), app)
        return
    counts, settings = run(_counts(app), app)
    limits = queue_limits(app, settings)
    if as_json:
        print_json([_row(c, settings.get(c.queue), limits.get(c.queue)) for c in counts])
        return
    if not counts:
        stdout().print(f"no jobs yet in {shown(app.url)}", highlight=False)
        return
    stdout().print(stats_table(counts, settings, limits))
    stdout().print(f"store: {shown(app.url)}", style="dim", highlight=False, soft_wrap=True)


async def _counts(app: Forebay) -> tuple[list[QueueCounts], dict[str, QueueSettings]]:
    """The counts, with a row for every paused queue (an empty one is worth seeing too), and
    the stored settings."""
    async with app:
        counts = await app.counts()
        settings = await app.queue_settings()
    known = {c.queue for c in counts}
    counts += [
        QueueCounts(n)
        for n, s in settings.items()
        if (s.paused or s.limits.active) and n not in known
    ]
    return sorted(counts, key=lambda c: c.queue), settings


def queue_limits(app: Forebay, settings: dict[str, QueueSettings]) -> dict[str, FlowLimits]:
    """Each queue's flow limits: as stored (what the leases obey, written by the workers),
    else as this app declares them (before any worker of it started)."""
    limits = {name: config.limits for name, config in app.queues.items()}
    limits.update({name: s.limits for name, s in settings.items() if s.limits.active})
    return limits


def _row(
    counts: QueueCounts, settings: QueueSettings | None, limits: FlowLimits | None
) -> dict[str, JSON]:
    row = counts.to_dict()
    row["paused"] = settings is not None and settings.paused
    row["max_depth"] = None if settings is None else settings.max_depth
    row["limits"] = (limits or NO_LIMITS).to_dict()
    return row


async def _watch(app: Forebay, interval_s: float) -> None:
    """Redraw until Ctrl-C or SIGTERM, then return normally (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with app:
            with Live(console=stdout(), auto_refresh=False, redirect_stderr=False) as live:
                while not stop.is_set():
                    counts = await app.counts()
                    settings = await app.queue_settings()
                    limits = queue_limits(app, settings)
                    live.update(_watched(counts, settings, limits, interval_s), refresh=True)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval_s):
                            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _watched(
    counts: list[QueueCounts],
    settings: dict[str, QueueSettings],
    limits: dict[str, FlowLimits],
    interval_s: float,
) -> Table:
    table = stats_table(counts, settings, limits)
    stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
    table.caption = f"{stamp} · every {interval_s:g}s · Ctrl-C to stop"
    return table


def stats_table(
    counts: list[QueueCounts],
    settings: dict[str, QueueSettings] | None = None,
    limits: dict[str, FlowLimits] | None = None,
) -> Table:
    """One row per queue (a paused one says so), and a total row when there are several.

    When some queue has flow limits (or throttled jobs), *running* reads ``3/4`` for a queue
    with a cap of 4, and two columns follow: *throttled* and the limits themselves."""
    settings = settings or {}
    limits = {name: found for name, found in (limits or {}).items() if found.active}
    flow = bool(limits) or any(c.throttled for c in counts)
    table = Table(header_style="bold", box=None, pad_edge=False, show_footer=len(counts) > 1)
    table.add_column("queue", footer="total", no_wrap=True)
    for name, style in _COLUMNS:
        total = sum(getattr(c, name) for c in counts)
        table.add_column(name, justify="right", style=style, footer=str(total), no_wrap=True)
        if name == "running" and flow:
            total = sum(c.throttled for c in counts)
            table.add_column("throttled", justify="right", style="magenta", footer=str(total))
    oldest = [c.oldest_queued_age_s for c in counts if c.oldest_queued_age_s is not None]
    table.add_column("oldest queued", justify="right", footer=format_age(max(oldest, default=None)))
    if flow:
        table.add_column("limits", overflow="fold", style="dim")
    for c in counts:
        paused = c.queue in settings and settings[c.queue].paused
        found = limits.get(c.queue, NO_LIMITS)
        cells = [
            running_text(c.running, found) if n == "running" else str(getattr(c, n))
            for n, _ in _COLUMNS
        ]
        if flow:
            cells.insert([n for n, _ in _COLUMNS].index("running") + 1, _throttled(c.throttled))
        table.add_row(
            f"{c.queue} [bold yellow](paused)[/]" if paused else c.queue,
            *cells,
            format_age(c.oldest_queued_age_s),
            *([Text(found.describe() if found.active else "")] if flow else []),
        )
    return table


def running_text(running: int, limits: FlowLimits) -> str:
    """``3/4``: 3 running of a cap of 4 across the fleet; just ``3`` without a cap."""
    return str(running) if limits.concurrency is None else f"{running}/{limits.concurrency}"


def _throttled(count: int) -> Text:
    return Text(str(count), style="bold magenta" if count else "dim")
