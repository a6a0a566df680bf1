"""The decisions behind a job's links on PostgreSQL — runs, parents, webhooks — made in Python
between the statements of one transaction (the statements and their order are the backend's).

Kept apart from :mod:`~forebay.backends.postgres.backend` because none of it talks to the
database: given rows read under lock, it says which new jobs are refused and why, what state a
new child is stored in, what becomes of a waiting child whose parent finished, and which jobs
a finish or a run's completion stores (deliveries on ``forebay.webhooks``, completion jobs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from forebay import jsonio
from forebay.errors import EnqueueError, RunSealed, UnknownParent, UnknownRun
from forebay.job import Job, JobState, NewJob
from forebay.runs import (
    DEPENDENCY_FAILED,
    JOB_WEBHOOK_TYPES,
    RUN_COMPLETED,
    WEBHOOK_QUEUE,
    Run,
    RunState,
    job_summary,
    run_summary,
    webhook_payload,
)

__all__ = [
    "DEPENDENCY_FAILED",
    "UNFINISHED",
    "RunCounts",
    "child_outcome",
    "completion_jobs",
    "delivery_job",
    "has_links",
    "refusal",
    "run_from_row",
    "stored_state",
]

UNFINISHED: Final = frozenset({"waiting", "queued", "running"})
FAILED: Final = frozenset({"dead", "cancelled"})


def has_links(job: NewJob) -> bool:
    """Whether storing ``job`` needs the linked path (a run, parents, a webhook, a parent job)."""
    return (
        job.run_id is not None
        or bool(job.after)
        or job.webhook is not None
        or job.parent_id is not None
    )


def refusal(
    jobs: Sequence[NewJob],
    parents: Mapping[int, str],
    runs: Mapping[str, str],
    may_join: set[tuple[int, str]],
) -> EnqueueError | None:
    """Why one request's jobs may not be stored (None: they may), from what was read under
    lock: ``parents`` (id → state), ``runs`` (id → state), and the (job, run) pairs of running
    jobs of those runs (``may_join``: their children still join a sealed run)."""
    for job in jobs:
        if job.run_id is not None and job.run_id not in runs:
            return UnknownRun(job.run_id)
    missing = sorted({p for job in jobs for p in job.after if p not in parents})
    if missing:
        return UnknownParent(missing)
    for job in jobs:
        if job.run_id is None or runs[job.run_id] == RunState.OPEN:
            continue
        if job.parent_id is None or (job.parent_id, job.run_id) not in may_join:
            return RunSealed(job.run_id, runs[job.run_id])
    return None


def stored_state(job: NewJob, parents: Mapping[int, str]) -> tuple[str, str | None]:
    """The state a new job is stored in, and its error when that is ``cancelled``."""
    if not job.after:
        return JobState.QUEUED, None
    if job.after_policy == "completed":
        failed = [p for p in job.after if parents[p] in FAILED]
        if failed:
            return JobState.CANCELLED, _failure(failed[0], parents[failed[0]])
    if any(parents[p] in UNFINISHED for p in job.after):
        return JobState.WAITING, None
    return JobState.QUEUED, None


def child_outcome(
    after: Sequence[int], policy: str | None, states: Mapping[int, str], just_finished: set[int]
) -> tuple[str, str | None] | None:
    """What becomes of a waiting child now that some of its parents finished: ``("queued",
    None)``, ``("cancelled", error)``, or None (it waits on). ``states``: its parents' states
    as read under the child's lock (a parent not found was pruned, so it had finished
    well); a failure names a parent that finished in this transaction first."""
    if (policy or "completed") == "completed":
        failed = sorted(
            (p for p in after if states.get(p) in FAILED), key=lambda p: (p not in just_finished, p)
        )
        if failed:
            return JobState.CANCELLED, _failure(failed[0], states[failed[0]])
    if any(states.get(p) in UNFINISHED for p in after):
        return None
    return JobState.QUEUED, None


def _failure(parent: int, state: str) -> str:
    return f"parent job {parent} ended {state}"


def delivery_job(job: Job) -> NewJob:
    """The delivery on ``forebay.webhooks`` of a finished job's final state."""
    assert job.webhook is not None and job.finished_at is not None
    data = job_summary(
        job_id=job.id,
        queue=job.queue,
        state=job.state.value,
        key=job.key,
        run_id=job.run_id,
        attempt=job.attempt,
        error=job.error,
        error_type=job.error_type,
        result=job.result,
        finished_at=job.finished_at.timestamp(),
    )
    payload = webhook_payload(job.webhook, JOB_WEBHOOK_TYPES[job.state.value], data)
    return NewJob.create(WEBHOOK_QUEUE, payload)


@dataclass(slots=True)
class RunCounts:
    """What one transaction adds to runs' stored counts, by run id."""

    total: dict[str, int] = field(default_factory=dict)
    completed: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    cancelled: dict[str, int] = field(default_factory=dict)

    def add(self, run_id: str, column: str, n: int = 1) -> None:
        counts: dict[str, int] = getattr(self, column)
        counts[run_id] = counts.get(run_id, 0) + n

    def args(self) -> tuple[list[str], list[int], list[int], list[int], list[int]]:
        """The ``count_runs`` statement's arrays, runs in id order."""
        ids = sorted({*self.total, *self.completed, *self.dead, *self.cancelled})
        return (
            ids,
            [self.total.get(i, 0) for i in ids],
            [self.completed.get(i, 0) for i in ids],
            [self.dead.get(i, 0) for i in ids],
            [self.cancelled.get(i, 0) for i in ids],
        )

    def __bool__(self) -> bool:
        return bool(self.total or self.completed or self.dead or self.cancelled)


def completion_jobs(row: Sequence[Any]) -> list[NewJob]:
    """The completion jobs of a run that just completed, from its ``count_runs`` /
    ``seal_run`` row (id, name, key, meta, on_complete, webhook, state, total, completed,
    dead, cancelled, created_at, sealed_at, completed_at, tenant). The completion job is the
    run's tenant's; the webhook delivery belongs to no tenant."""
    run_id, name, key, meta, on_complete, webhook = row[:6]
    summary = run_summary(
        run_id=run_id,
        name=name,
        key=key,
        meta=jsonio.loads(meta),
        total=row[7],
        completed=row[8],
        dead=row[9],
        cancelled=row[10],
        created_at=row[11].timestamp(),
        sealed_at=row[12].timestamp(),
        completed_at=row[13].timestamp(),
    )
    jobs = []
    if on_complete is not None:
        jobs.append(
            NewJob.create(on_complete, summary, key=f"run:{run_id}:complete", tenant=row[14])
        )
    if webhook is not None:
        payload = webhook_payload(webhook, RUN_COMPLETED, summary)
        jobs.append(NewJob.create(WEBHOOK_QUEUE, payload, key=f"run:{run_id}:webhook"))
    return jobs


def run_from_row(row: Sequence[Any], created: bool = True) -> Run:
    """A run read by ``get_run`` / ``list_runs``."""
    return Run(
        id=row[0],
        name=row[1],
        key=row[2],
        meta=jsonio.loads(row[3]),
        state=RunState(row[4]),
        on_complete=row[5],
        webhook=row[6],
        total=row[7],
        waiting=row[8],
        queued=row[9],
        running=row[10],
        completed=row[11],
        dead=row[12],
        cancelled=row[13],
        created_at=row[14],
        sealed_at=row[15],
        completed_at=row[16],
        created=created,
        tenant=row[17] if len(row) > 17 else None,
    )
