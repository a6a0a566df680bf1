"""``forebay jobs``, ``forebay job ID [--run-now]`` and ``forebay cancel``: look at jobs, make a
scheduled one due now, cancel them (by id, or by filter with ``--dry-run``).

``forebay job`` finds a job by id or by its queue and key, and with ``--wait`` waits until it is
finished; its exit code then says how it ended (:data:`WAIT_EXIT_CODES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import rich.json
import typer
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from forebay.app import Forebay
from forebay.cli.options import (
    ErrorTypeOption,
    JsonOption,
    LimitOption,
    QueueOption,
    RunFilterOption,
    TenantOption,
    UrlOption,
)
from forebay.cli.output import EXIT_USAGE, fail, format_ago, format_time, print_json, stdout
from forebay.cli.session import Use, make_app, run
from forebay.cli.store import shown
from forebay.errors import WaitTimeout
from forebay.job import JSON, Job, JobFilter, JobState

__all__ = ["WAIT_EXIT_CODES", "cancel", "job", "jobs", "jobs_table", "shown_state", "state_text"]

WAIT_EXIT_CODES = {
    JobState.COMPLETED: 0,
    JobState.DEAD: 3,
    JobState.CANCELLED: 4,
    JobState.WAITING: 5,
    JobState.QUEUED: 5,
    JobState.RUNNING: 5,
}
"""The exit code of ``forebay job --wait`` by the state the job is in at the end: 0 completed,
3 dead, 4 cancelled, 5 not finished within ``--timeout`` (1 and 2 are errors, as everywhere)."""

STATE_STYLES = {
    JobState.WAITING: "blue",
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "yellow",
    JobState.COMPLETED: "green",
    JobState.DEAD: "bold red",
    JobState.CANCELLED: "dim",
}


STALLED_STYLE = "bold magenta"

_CANCELLABLE = (JobState.WAITING, JobState.QUEUED, JobState.RUNNING)


def state_text(state: JobState) -> Text:
    return Text(str(state), style=STATE_STYLES.get(state, ""))


def shown_state(job: Job) -> Text:
    """The job's state as a person reads it: *stalled* for a running job whose lease expired."""
    if job.is_stalled():
        return Text("stalled", style=STALLED_STYLE)
    return state_text(job.state)


def jobs(
    queue: QueueOption = None,
    state: Annotated[
        JobState | None, typer.Option("--state", "-s", help="Only jobs in this state.")
    ] = None,
    error_type: ErrorTypeOption = None,
    run_id: RunFilterOption = None,
    tenant: TenantOption = None,
    limit: LimitOption = 50,
    before_id: Annotated[
        int | None,
        typer.Option(metavar="ID", help="Only jobs with a smaller id: the next page."),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first (``--state waiting``: those waiting for their parents)."""
    where = JobFilter(queue=queue, state=state, error_type=error_type, run_id=run_id, tenant=tenant)
    app = make_app(url, use=Use.READ)
    found = run(_list(app, where, limit, before_id), app)
    if as_json:
        print_json([j.to_dict(detail=False) for j in found])
        return
    if not found:
        stdout().print(f"no jobs match in {shown(app.url)}", highlight=False)
        return
    stdout().print(jobs_table(found))
    if len(found) == limit:
        stdout().print(f"more with --before-id {found[-1].id}", style="dim")


async def _list(app: Forebay, where: JobFilter, limit: int, before_id: int | None) -> list[Job]:
    async with app:
        return await app.list_jobs(where, limit=limit, before_id=before_id)


def jobs_table(found: Sequence[Job]) -> Table:
    """One row per job; the last column is the progress of a running job, the parents of a
    waiting one, else its last error. A tenant column when some job has a tenant."""
    tenants = any(j.tenant is not None for j in found)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("id", "queue", "state", "attempt", "priority", "key", "updated"):
        table.add_column(name, no_wrap=name != "key", justify="right" if name == "id" else "left")
        if name == "queue" and tenants:
            table.add_column("tenant", no_wrap=True)
    table.add_column("progress / error", overflow="ellipsis", no_wrap=True, max_width=60)
    for j in found:
        detail = _detail(j)
        table.add_row(
            str(j.id),
            j.queue,
            *([j.tenant or ""] if tenants else []),
            shown_state(j),
            str(j.attempt),
            str(j.priority),
            j.key or "",
            format_ago(j.updated_at),
            Text(detail.splitlines()[0] if detail else ""),
        )
    return table


def _detail(j: Job) -> str:
    if j.state is JobState.RUNNING:
        return _progress(j)
    if j.state is JobState.WAITING:
        return "after " + ", ".join(map(str, j.after))
    return j.error or ""


def _progress(j: Job) -> str:
    if j.progress_pct is None:
        return ""
    return f"{j.progress_pct:g}% {j.progress_message or ''}".strip()


def job(
    job_id: Annotated[
        int | None,
        typer.Argument(metavar="[ID]", help="The job's id (or give --queue and --key).", min=1),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", "-q", metavar="QUEUE", help="The queue of the job with --key."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="The job enqueued on --queue with this idempotency key."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Wait until the job is finished; the exit code says how it ended: "
            "0 completed, 3 dead, 4 cancelled, 5 not finished within --timeout.",
        ),
    ] = False,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0,
            help="With --wait: stop waiting after this many seconds (default: no limit).",
        ),
    ] = None,
    run_now: Annotated[
        bool,
        typer.Option(
            "--run-now",
            help="Make the job due now: a scheduled one, or a retry waiting out its backoff. "
            "A job that is not queued is refused (exit 1).",
        ),
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one job: state, attempts, progress, times, payload, result and the errors of its
    failed attempts (with tracebacks)."""
    _check_job_options(job_id, queue, key, wait, timeout_s)
    app = make_app(url, use=Use.READ)
    found, timed_out = run(_get(app, job_id, queue, key, run_now, wait, timeout_s), app)
    if as_json:
        print_json(found.to_dict())
    else:
        if run_now:
            stdout().print(f"job {found.id} is due now")
        stdout().print(job_details(found))
    if wait:
        if timed_out:
            typer.echo(f"job {found.id} is still {found.state} after {timeout_s:g}s", err=True)
        raise typer.Exit(WAIT_EXIT_CODES[found.state])


def _check_job_options(
    job_id: int | None, queue: str | None, key: str | None, wait: bool, timeout_s: float | None
) -> None:
    if job_id is not None and (queue is not None or key is not None):
        fail("give a job's ID, or --queue and --key, not both", EXIT_USAGE)
    if job_id is None and (queue is None or key is None):
        fail("give a job's ID, or --queue and --key of the job to show", EXIT_USAGE)
    if timeout_s is not None and not wait:
        fail("--timeout goes with --wait", EXIT_USAGE)


async def _get(
    app: Forebay,
    job_id: int | None,
    queue: str | None,
    key: str | None,
    run_now: bool,
    wait: bool,
    timeout_s: float | None,
) -> tuple[Job, bool]:
    """The job (by id, or by queue and key), made due now with ``run_now``, once finished with
    ``wait``; and whether the wait timed out."""
    async with app:
        found = await (app.get_job(job_id) if job_id is not None else _by_key(app, queue, key))
        if run_now:
            found = await app.run_now(found.id)
        if not wait:
            return found, False
        try:
            return await app.wait(found.id, timeout_s=timeout_s), False
        except WaitTimeout:
            now = await app.get_job(found.id)  # it may have finished since
            return now, not now.state.terminal


async def _by_key(app: Forebay, queue: str | None, key: str | None) -> Job:
    assert queue is not None and key is not None  # _check_job_options
    return await app.get_job(queue, key=key)


def job_details(j: Job) -> RenderableType:
    """The job's fields, then the errors of its failed attempts, oldest first."""
    if not j.errors:
        return _fields(j)
    return Group(_fields(j), Text(""), _history(j))


def _fields(j: Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows: list[tuple[str, str | Text | rich.json.JSON | None]] = [
        ("id", str(j.id)),
        ("queue", j.queue),
        ("state", _state_detail(j)),
        ("attempt", str(j.attempt)),
        ("deliveries", str(j.deliveries)),
        ("defers", str(j.defers)),
        ("priority", str(j.priority)),
        ("key", j.key),
        ("tenant", j.tenant),
        ("rate key", j.rate_key),
        ("concurrency key", j.concurrency_key),
        ("fair key", j.fair_key),
        ("run id", j.run_id),
        ("after", ", ".join(map(str, j.after)) or None),
        ("after policy", j.after_policy if j.after else None),
        ("parent", None if j.parent_id is None else str(j.parent_id)),
        ("webhook", j.webhook),
        ("max attempts", None if j.max_attempts is None else str(j.max_attempts)),
        ("timeout", None if j.timeout_s is None else f"{j.timeout_s:g}s"),
        ("progress", _progress(j) or None),
        ("error type", j.error_type),
        ("error", Text(j.error) if j.error else None),
        ("run at", format_time(j.run_at)),
        ("created", format_time(j.created_at)),
        ("updated", format_time(j.updated_at)),
        ("started", format_time(j.started_at) or None),
        ("finished", format_time(j.finished_at) or None),
        ("lease until", format_time(j.lease_expires_at) or None),
        ("worker", j.worker_id),
        ("payload", rich.json.JSON.from_data(j.payload)),
        ("result", None if j.result is None else rich.json.JSON.from_data(j.result)),
    ]
    for name, value in rows:
        if value is not None:
            grid.add_row(name, value)
    return grid


def _history(j: Job) -> Group:
    """Each failed attempt kept: a heading line, then its traceback, indented."""
    kept = len(j.errors)
    title = "errors of the last attempt" if kept == 1 else f"errors of the last {kept} attempts"
    parts: list[RenderableType] = [Text(title, style="bold")]
    for e in j.errors:
        head = Text(f"attempt {e.attempt}", style="bold")
        head.append(f"  {format_time(e.at)}  ", style="dim")
        head.append(e.message, style="red")
        parts.append(head)
        if e.traceback:
            parts.append(Padding(Text(e.traceback, style="dim"), (0, 0, 0, 4)))
    return Group(*parts)


def _state_detail(j: Job) -> Text:
    if not j.is_stalled():
        return state_text(j.state)
    return Text.assemble(
        ("stalled", STALLED_STYLE),
        " (running, but its lease expired: the worker died or hangs; it runs again once "
        "a worker reclaims it)",
    )


def cancel(
    job_ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="[ID]...", help="Ids of waiting, queued or running jobs."),
    ] = None,
    queue: QueueOption = None,
    state: Annotated[
        JobState | None,
        typer.Option("--state", "-s", help="Only jobs in this state: waiting, queued or running."),
    ] = None,
    run_id: RunFilterOption = None,
    error_type: ErrorTypeOption = None,
    tenant: TenantOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count the jobs a filter would cancel.")
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel jobs by id, or every waiting, queued and running job a filter matches.

    A running job is cancelled at once; its worker stops the handler within a heartbeat.
    Cancelling a job that is already cancelled succeeds and says so.
    """
    where = JobFilter(queue=queue, state=state, run_id=run_id, error_type=error_type, tenant=tenant)
    if job_ids:
        if where != JobFilter() or dry_run:
            fail("give job ids or a filter (--queue, --state, ...), not both", EXIT_USAGE)
        _cancel_ids(make_app(url), job_ids, as_json)
        return
    if where == JobFilter():
        fail("nothing to cancel: give job ids, or a filter such as --queue Q", EXIT_USAGE)
    if state not in (None, *_CANCELLABLE):
        fail(f"only waiting, queued or running jobs can be cancelled, not {state} ones", EXIT_USAGE)
    app = make_app(url)
    count = run(_cancel_where(app, where, dry_run), app)
    if as_json:
        print_json({"cancelled": count, "dry_run": dry_run})
        return
    jobs_text = f"{count} job{'' if count == 1 else 's'}"
    stdout().print(f"would cancel {jobs_text}" if dry_run else f"cancelled {jobs_text}")


async def _cancel_where(app: Forebay, where: JobFilter, dry_run: bool) -> int:
    async with app:
        return await app.cancel_where(where, dry_run=dry_run)


def _cancel_ids(app: Forebay, job_ids: list[int], as_json: bool) -> None:
    cancelled, already, refused = run(_cancel(app, job_ids), app)
    if as_json:
        document: dict[str, JSON] = {
            "cancelled": list[JSON](cancelled),
            "already_cancelled": list[JSON](already),
            "not_cancelled": [{"id": i, "reason": why} for i, why in refused.items()],
        }
        print_json(document)
    else:
        if cancelled:
            stdout().print(f"cancelled {_ids(cancelled)}")
        if already:
            stdout().print(
                f"{_ids(already)} {'was' if len(already) == 1 else 'were'} already cancelled"
            )
    if refused:
        reasons = ", ".join(f"job {i} ({why})" for i, why in refused.items())
        fail(f"not cancelled: {reasons}")


async def _cancel(app: Forebay, job_ids: list[int]) -> tuple[list[int], list[int], dict[int, str]]:
    """The ids cancelled now, those cancelled before (a success: the job is cancelled, as
    asked), and why the others were not."""
    async with app:
        cancelled = await app.cancel(*job_ids)
        already: list[int] = []
        refused: dict[int, str] = {}
        for job_id in dict.fromkeys(job_ids):
            if job_id in cancelled:
                continue
            current = await app.backend.get_job(job_id)
            if current is None:
                refused[job_id] = "no such job"
            elif current.state is JobState.CANCELLED:
                already.append(job_id)
            else:
                refused[job_id] = (
                    f"{current.state}: only waiting, queued or running jobs can be cancelled"
                )
        return cancelled, already, refused


def _ids(ids: Sequence[int]) -> str:
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(map(str, ids))
