"""``forebay jobs``, ``forebay job ID`` and ``forebay cancel ID...``: look at jobs, cancel them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import rich.json
import typer
from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import ErrorTypeOption, JsonOption, LimitOption, QueueOption, UrlOption
from forebay.cli.output import fail, format_ago, format_time, print_json, stdout
from forebay.cli.session import make_app, run
from forebay.job import JSON, Job, JobFilter, JobState

__all__ = ["cancel", "job", "jobs", "jobs_table", "state_text"]

STATE_STYLES = {
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "yellow",
    JobState.COMPLETED: "green",
    JobState.DEAD: "bold red",
    JobState.CANCELLED: "dim",
}


def state_text(state: JobState) -> Text:
    return Text(str(state), style=STATE_STYLES.get(state, ""))


def jobs(
    queue: QueueOption = None,
    state: Annotated[
        JobState | None, typer.Option("--state", "-s", help="Only jobs in this state.")
    ] = None,
    error_type: ErrorTypeOption = None,
    limit: LimitOption = 50,
    before_id: Annotated[
        int | None,
        typer.Option(metavar="ID", help="Only jobs with a smaller id: the next page."),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    where = JobFilter(queue=queue, state=state, error_type=error_type)
    found = run(_list(make_app(url), where, limit, before_id))
    if as_json:
        print_json([j.to_dict() for j in found])
        return
    if not found:
        stdout().print("no jobs match")
        return
    stdout().print(jobs_table(found))
    if len(found) == limit:
        stdout().print(f"more with --before-id {found[-1].id}", style="dim")


async def _list(app: Forebay, where: JobFilter, limit: int, before_id: int | None) -> list[Job]:
    async with app:
        return await app.list_jobs(where, limit=limit, before_id=before_id)


def jobs_table(found: Sequence[Job]) -> Table:
    """One row per job; the last column is the progress of a running job, else its last error."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("id", "queue", "state", "attempt", "priority", "key", "updated"):
        table.add_column(name, no_wrap=name != "key", justify="right" if name == "id" else "left")
    table.add_column("progress / error", overflow="ellipsis", no_wrap=True, max_width=60)
    for j in found:
        detail = _progress(j) if j.state == JobState.RUNNING else (j.error or "")
        table.add_row(
            str(j.id),
            j.queue,
            state_text(j.state),
            str(j.attempt),
            str(j.priority),
            j.key or "",
            format_ago(j.updated_at),
            Text(detail.splitlines()[0] if detail else ""),
        )
    return table


def _progress(j: Job) -> str:
    if j.progress_pct is None:
        return ""
    return f"{j.progress_pct:g}% {j.progress_message or ''}".strip()


def job(
    job_id: Annotated[int, typer.Argument(metavar="ID", help="The job's id.")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: state, attempts, progress, error, times and payload."""
    found = run(_get(make_app(url), job_id))
    if as_json:
        print_json(found.to_dict())
        return
    stdout().print(job_details(found))


async def _get(app: Forebay, job_id: int) -> Job:
    async with app:
        return await app.get_job(job_id)


def job_details(j: Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, str | Text | rich.json.JSON | None]] = [
        ("id", str(j.id)),
        ("queue", j.queue),
        ("state", state_text(j.state)),
        ("attempt", str(j.attempt)),
        ("deliveries", str(j.deliveries)),
        ("defers", str(j.defers)),
        ("priority", str(j.priority)),
        ("key", j.key),
        ("run id", j.run_id),
        ("max attempts", None if j.max_attempts is None else str(j.max_attempts)),
        ("timeout", None if j.timeout_s is None else f"{j.timeout_s:g}s"),
        ("progress", _progress(j) or None),
        ("error type", j.error_type),
        ("error", Text(j.error) if j.error else None),
        ("run at", format_time(j.run_at)),
        ("created", format_time(j.created_at)),
        ("updated", format_time(j.updated_at)),
        ("finished", format_time(j.finished_at) or None),
        ("lease until", format_time(j.lease_expires_at) or None),
        ("worker", j.worker_id),
        ("payload", rich.json.JSON.from_data(j.payload)),
    ]
    for name, value in rows:
        if value is not None:
            grid.add_row(name, value)
    return grid


def cancel(
    job_ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Ids of queued jobs.")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel queued jobs (a running job is not stopped; it finishes or fails as usual)."""
    cancelled, refused = run(_cancel(make_app(url), job_ids))
    if as_json:
        document: dict[str, JSON] = {
            "cancelled": list[JSON](cancelled),
            "not_cancelled": [{"id": i, "reason": why} for i, why in refused.items()],
        }
        print_json(document)
    elif cancelled:
        stdout().print(f"cancelled {_ids(cancelled)}")
    if refused:
        reasons = ", ".join(f"job {i} ({why})" for i, why in refused.items())
        fail(f"not cancelled: {reasons}")


async def _cancel(app: Forebay, job_ids: list[int]) -> tuple[list[int], dict[int, str]]:
    async with app:
        cancelled = await app.cancel(*job_ids)
        refused: dict[int, str] = {}
        for job_id in dict.fromkeys(job_ids):
            if job_id in cancelled:
                continue
            current = await app.backend.get_job(job_id)
            refused[job_id] = (
                "no such job"
                if current is None
                else f"{current.state}: only queued jobs can be cancelled"
            )
        return cancelled, refused


def _ids(ids: Sequence[int]) -> str:
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(map(str, ids))
