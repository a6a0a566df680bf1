"""The shapes of the HTTP API's bodies and parameters (pydantic models at the HTTP edge, as in
the OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from forebay.job import MAX_ATTEMPTS_LIMIT, MAX_PARENTS, TIMEOUT_S_LIMIT

__all__ = [
    "AttemptErrorOut",
    "BeforeIdParam",
    "DeadFilterIn",
    "DeadPage",
    "ErrorOut",
    "FieldErrorOut",
    "FleetOut",
    "JobAccepted",
    "JobDetailOut",
    "JobIn",
    "JobOut",
    "JobsPage",
    "LimitParam",
    "LimitsOut",
    "QueueOut",
    "QueueParam",
    "QueuesOut",
    "ReadyOut",
    "RunIn",
    "RunOut",
    "RunsPage",
    "SourceAccepted",
    "ThroughputOut",
    "WithoutNul",
    "job_id_path",
]

MAX_JOB_ID = 2**63 - 1
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_RUN_AT = datetime(9000, 1, 1, tzinfo=UTC)
JobId = Annotated[int, Field(ge=1, le=MAX_JOB_ID)]
StrictJobId = Annotated[int, Field(ge=1, le=MAX_JOB_ID, strict=True)]


def _without_nul(text: str | None) -> str | None:
    if text is not None and "\x00" in text:
        raise ValueError("must not contain a NUL character (no job store can hold one)")
    return text


WithoutNul = AfterValidator(_without_nul)
"""Refuses text with a NUL character: PostgreSQL text cannot hold one, so a filter holding one
is a mistake on every backend (400), never a store outage."""


FlowKey = Annotated[
    str | Annotated[int, Field(strict=True)] | None,
    Field(union_mode="left_to_right"),
]
"""A flow key in a body: text (1 to 200 characters) or a whole number, checked by NewJob."""


class JobIn(BaseModel):
    """One job to enqueue."""

    model_config = ConfigDict(extra="forbid")

    payload: Any = Field(description="Any JSON value: what the handler receives as job.payload.")
    key: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Idempotency key: a second enqueue with the same key returns the first job.",
    )
    priority: int = Field(0, ge=-(2**31), lt=2**31, description="Higher runs first.")
    delay_s: float | None = Field(
        None, ge=0, le=10 * 365 * 86400, allow_inf_nan=False, description="Run after this delay."
    )
    run_at: AwareDatetime | None = Field(
        None, description="Run at this time (with a timezone). Give run_at or delay_s, not both."
    )
    max_attempts: int | None = Field(
        None,
        ge=1,
        le=MAX_ATTEMPTS_LIMIT,
        strict=True,
        description="This job's own limit of error attempts, instead of its queue's.",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=TIMEOUT_S_LIMIT,
        strict=True,
        allow_inf_nan=False,
        description="This job's own time limit per run in seconds (at most a week), instead "
        "of its queue's.",
    )
    run: Annotated[str | None, WithoutNul] = Field(
        None,
        min_length=1,
        max_length=256,
        description="The id of an open run to join (POST /v1/runs starts one).",
    )
    after: list[StrictJobId] = Field(
        default_factory=list,
        max_length=MAX_PARENTS,
        description="Ids of jobs this one waits for (state waiting) until they finish.",
    )
    after_policy: Literal["completed", "always"] = Field(
        "completed",
        description="completed: run once every parent completed, cancelled if one ends dead "
        "or cancelled; always: run once every parent finished, however it ended.",
    )
    webhook: Annotated[str | None, WithoutNul] = Field(
        None,
        min_length=1,
        max_length=2048,
        description="An http(s) URL that gets the job's final state, signed (docs/webhooks.md).",
    )
    tenant: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Whose job this is (letters, digits, _.:@-). A token bound to a tenant "
        "enqueues its own tenant's jobs: another one here is refused (403).",
    )
    rate_key: FlowKey = Field(
        None, description="The job's key for its queue's per-key rate (default: the queue's)."
    )
    concurrency_key: FlowKey = Field(
        None, description="The job's key for its queue's per-key concurrency cap."
    )
    fair_key: FlowKey = Field(
        None, description="The group the job takes turns in when its queue leases fairly."
    )

    @field_validator("run_at")
    @classmethod
    def _plausible_time(cls, value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST_RUN_AT <= value <= LATEST_RUN_AT:
            raise ValueError("must be between 1970 and 9000 (UTC)")
        return value


class DeadFilterIn(BaseModel):
    """Which dead jobs to replay or purge; every field narrows the match."""

    model_config = ConfigDict(extra="forbid")

    queue: Annotated[str | None, WithoutNul] = Field(None, min_length=1, max_length=128)
    error_type: Annotated[str | None, WithoutNul] = Field(None, min_length=1, max_length=256)
    since: AwareDatetime | None = Field(None, description="Dead since this time (updated_at).")
    until: AwareDatetime | None = Field(None, description="Dead before this time.")
    ids: list[JobId] | None = Field(None, max_length=10_000)
    dry_run: bool = Field(False, description="Only count what would be affected.")


class CancelFilterIn(BaseModel):
    """Which unfinished jobs to cancel; every field narrows the match (one is needed)."""

    model_config = ConfigDict(extra="forbid")

    queue: Annotated[str | None, WithoutNul] = Field(None, min_length=1, max_length=128)
    state: Literal["waiting", "queued", "running"] | None = Field(
        None, description="Only waiting, queued or running jobs (default: all three)."
    )
    run_id: Annotated[str | None, WithoutNul] = Field(None, min_length=1, max_length=256)
    error_type: Annotated[str | None, WithoutNul] = Field(None, min_length=1, max_length=256)
    ids: list[JobId] | None = Field(None, max_length=10_000)
    dry_run: bool = Field(False, description="Only count what would be cancelled.")


class CancelledOut(BaseModel):
    cancelled: int = Field(description="Jobs cancelled (with dry_run: that would be).")
    dry_run: bool


class RateOut(BaseModel):
    count: int
    period_s: float
    burst: int


class LimitsOut(BaseModel):
    """A queue's flow limits (docs/flow-control.md); null: no such limit."""

    rate: RateOut | None = Field(description="Jobs started per period, the whole queue.")
    rate_per_key: RateOut | None = Field(description="Jobs started per period, per rate_key.")
    concurrency: int | None = Field(description="Jobs running at once, every worker together.")
    concurrency_per_key: int | None = Field(description="Jobs running at once per key.")
    fair: bool = Field(description="fair_key groups take turns.")
    aging_s: float | None = Field(description="Seconds per step of effective priority.")


class QueueSettingsOut(BaseModel):
    queue: str
    paused: bool
    max_depth: int | None
    limits: LimitsOut | None = None
    updated_at: datetime | None


class JobAccepted(BaseModel):
    id: int
    queue: str
    key: str | None
    state: str
    created: bool = Field(description="False when a job with the same key was already stored.")
    run_at: datetime | None


class SourceAccepted(BaseModel):
    source: str
    jobs: list[JobAccepted]


class JobOut(BaseModel):
    id: int
    queue: str
    state: str
    key: str | None
    priority: int
    attempt: int
    deliveries: int
    defers: int
    run_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    worker_id: str | None
    progress: float | None
    progress_message: str | None
    error: str | None = Field(
        description="The last error while the job is queued again or dead (null once completed)."
    )
    error_type: str | None
    run_id: str | None
    started_at: datetime | None = Field(
        None, description="When the current (or last) attempt was leased."
    )
    max_attempts: int | None = Field(description="The job's own limit (null: its queue's).")
    timeout_s: float | None = Field(description="The job's own limit (null: its queue's).")
    after: list[int] = Field(description="The jobs this one waits (or waited) for.")
    after_policy: Literal["completed", "always"]
    webhook: str | None = Field(description="The URL that gets the job's final state.")
    parent_id: int | None = Field(
        description="The job whose handler enqueued this one (job.enqueue), if one did."
    )
    tenant: str | None = Field(None, description="Whose job this is.")
    rate_key: str | None = Field(None, description="Its key for the queue's per-key rate.")
    concurrency_key: str | None = Field(None, description="Its key for the per-key cap.")
    fair_key: str | None = Field(None, description="The group it takes turns in.")
    payload: Any
    stalled: bool = Field(
        description="Running with an expired lease: its worker died or hangs; it runs again "
        "once reclaimed. state stays running (the stored state)."
    )


class AttemptErrorOut(BaseModel):
    attempt: int
    at: datetime
    type: str
    message: str
    traceback: str | None = Field(
        description="Where it was raised (Python's traceback text), at most 8 KB (its end kept)."
    )


class JobDetailOut(JobOut):
    """One job in full: also its result and the errors of its last ten failed attempts."""

    result: Any = Field(None, description="What the handler returned, as JSON (null: nothing).")
    errors: list[AttemptErrorOut] = Field(
        default_factory=list, description="The last ten failed attempts' errors, oldest first."
    )


class QueueOut(BaseModel):
    queue: str
    declared: bool
    handled: bool = Field(description="This app has a handler for the queue.")
    paused: bool = Field(description="No worker leases the queue (enqueues are accepted).")
    max_depth: int | None = Field(description="The stored limit every producer obeys.")
    waiting: int = Field(description="Jobs waiting for their parents (after=[...]).")
    queued: int
    running: int
    completed: int
    dead: int
    cancelled: int
    scheduled: int
    retrying: int
    oldest_queued_age_s: float | None
    stalled: int = Field(description="Running jobs whose lease expired (part of running).")
    throttled: int = Field(
        0, description="Due queued jobs a flow limit holds back now (rate or concurrency cap)."
    )
    limits: LimitsOut = Field(
        description="The stored flow limits (the app's declared ones when none are stored); "
        "the concurrency cap is limits.concurrency."
    )


class QueuesOut(BaseModel):
    queues: list[QueueOut]


class JobsPage(BaseModel):
    jobs: list[JobOut]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next page; null on the last page."
    )


DeadPage = JobsPage


class RunIn(BaseModel):
    """A run to start (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, WithoutNul] = Field(None, min_length=1, max_length=256)
    key: Annotated[str | None, WithoutNul] = Field(
        None,
        min_length=1,
        max_length=512,
        description="Idempotency key: starting a run with a stored run's key returns that run.",
    )
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Any JSON object kept with the run (at most 64 KiB)."
    )
    on_complete: Annotated[str | None, WithoutNul] = Field(
        None,
        min_length=1,
        max_length=128,
        description="A queue that gets one job, with the run's summary, when the run completes.",
    )
    webhook: Annotated[str | None, WithoutNul] = Field(
        None,
        min_length=1,
        max_length=2048,
        description="An http(s) URL that gets run.completed, signed (docs/webhooks.md).",
    )
    tenant: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Whose run this is (a token bound to a tenant starts its own tenant's).",
    )


class RunOut(BaseModel):
    """A run and its counts, as of the read (one consistent snapshot):
    ``waiting + queued + running + completed + dead + cancelled == total``."""

    id: str
    name: str | None
    key: str | None
    meta: dict[str, Any]
    state: Literal["open", "sealed", "completed"] = Field(
        description="open: jobs may join; sealed: only its running jobs' children join; "
        "completed: sealed and every job finished."
    )
    on_complete: str | None
    webhook: str | None
    tenant: str | None = None
    total: int = Field(description="Every job that ever joined.")
    waiting: int
    queued: int = Field(description="Due, scheduled and backing-off jobs.")
    running: int
    completed: int
    dead: int
    cancelled: int
    created_at: datetime
    sealed_at: datetime | None
    completed_at: datetime | None


class RunsPage(BaseModel):
    runs: list[RunOut]
    next_before_id: str | None = Field(
        description="Pass as before_id for the next page; null on the last page."
    )


class FieldErrorOut(BaseModel):
    """One field error of a 400 ``invalid_request`` or a 422 ``payload_validation``."""

    loc: list[str] = Field(description="Where the error is (for a 422: in the job's payload).")
    message: str
    job: int | None = Field(
        None, description="422: the job's position in the request's jobs (0 for one job)."
    )
    type: str | None = Field(None, description="422: pydantic's error type, e.g. missing.")


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[FieldErrorOut] | None = None
    tenant: str | None = Field(None, description="tenant_quota_full: the tenant at its quota.")
    max_depth: int | None = Field(
        None, description="tenant_quota_full: its quota of unfinished jobs."
    )


class ErrorOut(BaseModel):
    error: ErrorDetail


class WorkerOut(BaseModel):
    """One live worker process, as it registered in the store (docs/fleet.md)."""

    id: str
    host: str
    pid: int
    queues: list[str] = Field(description="The queues it leases from.")
    concurrency: int = Field(description="Jobs it runs at once, over all its queues.")
    version: str = Field(description="The forebay version it runs.")
    started_at: datetime
    last_seen: datetime = Field(description="Its last heartbeat.")
    expires_at: datetime = Field(
        description="It drops out of this list then unless it heartbeats again."
    )
    completed: int = Field(description="Jobs it completed since it started.")
    failed: int = Field(description="Runs of its that failed (retried or dead-lettered).")
    running: int = Field(description="Jobs it runs now.")
    stopping: bool = Field(description="Shutting down: finishing its jobs, leasing no more.")


class QueueConsumersOut(BaseModel):
    queue: str
    workers: int = Field(description="Live workers that lease from this queue.")
    concurrency: int = Field(description="The sum of their concurrency.")


class FleetOut(BaseModel):
    workers: list[WorkerOut] = Field(description="The live workers, the longest running first.")
    queues: list[QueueConsumersOut] = Field(
        description="Every queue the store holds jobs of or a live worker consumes, by name."
    )


class ThroughputRowOut(BaseModel):
    queue: str
    minute: datetime = Field(description="The start of the minute.")
    completed: int
    dead: int = Field(description="Jobs that entered dead in that minute.")
    reclaimed: int = Field(description="Expired leases taken back from a worker gone silent.")


class QueueTotalsOut(BaseModel):
    queue: str
    completed: int
    dead: int
    reclaimed: int


class ThroughputOut(BaseModel):
    minutes: int = Field(description="How many minutes back the series goes.")
    since: datetime = Field(description="The start of the first minute the series covers.")
    series: list[ThroughputRowOut] = Field(
        description="Per queue and minute with a finished job (minutes without any are left out)."
    )
    totals: list[QueueTotalsOut] = Field(
        description="Per queue, since the store was created (never decreases)."
    )


class ReadyOut(BaseModel):
    ready: bool
    backend: dict[str, Any]
    workers: dict[str, Any] | None = Field(
        description="This node's in-process workers (null: it runs none)."
    )
    fleet: dict[str, Any] | None = Field(
        None, description="The live workers of every host, from the store (null: unreachable)."
    )
    queues: list[dict[str, Any]] = Field(
        description="Counts per queue and state, with the live workers consuming it (consumers)."
    )
    unconsumed: list[str] = Field(
        [], description="Queues that no live worker consumes (their jobs wait; still ready)."
    )


# -- parameters -------------------------------------------------------------------------------
job_id_path = Path(ge=1, le=MAX_JOB_ID, description="The job's id, as answered at enqueue.")
"""The ``{job_id}`` of a job's routes (a default value: ``job_id: int = job_id_path``)."""
# The query parameters the job lists share (GET /v1/jobs, GET /v1/dead).
QueueParam = Annotated[str | None, Query(min_length=1, max_length=128), WithoutNul]
BeforeIdParam = Annotated[int | None, Query(ge=1, le=MAX_JOB_ID)]
LimitParam = Annotated[int, Query(ge=1, le=1000)]
