"""``forebay workers``: the worker processes registered in the store, on every host, and per
queue how many of them consume it.

Every worker saves its record in the store as it runs (:mod:`forebay.worker.registry`), so this
command, run anywhere the store is reachable, lists the whole fleet, and a queue that no live
worker consumes stands out (jobs enqueued to it wait until one starts).
"""

from __future__ import annotations

from datetime import datetime

from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import AppOption, JsonOption, UrlOption
from forebay.cli.output import format_ago, format_time, print_json, stdout
from forebay.cli.session import Use, make_app, run
from forebay.cli.store import shown
from forebay.fleet import QueueConsumers, WorkerInfo, queue_consumers
from forebay.job import utcnow

__all__ = ["workers"]


def workers(app_ref: AppOption = None, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The live worker processes of the whole fleet, and per queue how many consume it.

    A worker is listed from its start until it stops cleanly; one killed without a goodbye
    drops out once its record's ttl has passed (three heartbeats, at least 15 seconds).
    *failed* counts runs that were retried or dead-lettered; *stopping*: shutting down,
    finishing its running jobs. Queues are those the store holds jobs of (and, with **--app**,
    those the app declares); one that no live worker consumes is shown in red.
    """
    app = make_app(url, app_ref, use=Use.READ)
    found, queues = run(_fleet(app), app)
    consumers = queue_consumers(found, queues)
    if as_json:
        print_json(
            {
                "workers": [w.to_dict() for w in found],
                "queues": [c.to_dict() for c in consumers],
            }
        )
        return
    now = utcnow()
    if found:
        stdout().print(workers_table(found, now))
    else:
        stdout().print(f"no live workers in {shown(app.url)}", highlight=False)
    if consumers:
        stdout().print()
        stdout().print(consumers_table(consumers))
    stdout().print(f"store: {shown(app.url)}", style="dim", highlight=False, soft_wrap=True)


async def _fleet(app: Forebay) -> tuple[list[WorkerInfo], list[str]]:
    """The live workers, and the queues to summarise: the store's and the app's declared."""
    async with app:
        found = await app.list_workers()
        counts = await app.counts()
    declared = [name for name, config in app.queues.items() if config.handler is not None]
    return found, [c.queue for c in counts] + declared


def workers_table(found: list[WorkerInfo], now: datetime) -> Table:
    """One row per worker, oldest first."""
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("host", no_wrap=True)
    table.add_column("pid", justify="right")
    table.add_column("queues", overflow="fold")
    for name in ("concurrency", "running", "completed", "failed"):
        table.add_column(name, justify="right")
    table.add_column("started")
    table.add_column("last seen", justify="right")
    table.add_column("stopping")
    for w in found:
        table.add_row(
            w.id,
            w.host,
            str(w.pid),
            ", ".join(w.queues),
            str(w.concurrency),
            Text(str(w.running), style="yellow" if w.running else ""),
            Text(str(w.completed), style="green"),
            Text(str(w.failed), style="red" if w.failed else ""),
            format_time(w.started_at, now),
            format_ago(w.last_seen, now),
            Text("stopping", style="bold yellow") if w.stopping else "",
        )
    return table


def consumers_table(consumers: list[QueueConsumers]) -> Table:
    """Per queue: its live consumers and the jobs they run at once in all."""
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("queue", no_wrap=True)
    table.add_column("workers", justify="right")
    table.add_column("concurrency", justify="right")
    for c in consumers:
        if c.workers:
            table.add_row(c.queue, str(c.workers), str(c.concurrency))
        else:
            table.add_row(c.queue, Text("0 (no live worker)", style="bold red"), "0")
    return table
