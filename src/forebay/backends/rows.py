"""A stored job as a :class:`~forebay.job.Job`: the one mapping every backend feeds.

Every backend stores the same fields, named in :data:`COLUMNS`: the SQL backends select them in
that order (their queries' ``{columns}``), and the Redis backend keeps them under those names in
each job's hash. So a job read from any store is built by :func:`job_from_row`, from a row in
that order (:func:`job_from_hash` makes such a row of a Redis hash first). The payload is kept
as its stored text, parsed when a handler first reads it (see :class:`~forebay.job.Job`), and
so are its result and errors history (JSON text, or NULL).

This runs once per job leased, on the workers' hot path: it indexes the row and builds the job
directly, with no per-field dispatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from forebay import jsonio
from forebay.job import Job, JobState, PayloadText, StoredText

__all__ = ["COLUMNS", "job_from_hash", "job_from_row"]

COLUMNS: Final = (
    "id",
    "queue",
    "payload",
    "state",
    "key",
    "priority",
    "attempt",
    "deliveries",
    "defers",
    "run_at",
    "created_at",
    "updated_at",
    "finished_at",
    "lease_token",
    "lease_expires_at",
    "worker_id",
    "progress",
    "progress_message",
    "error",
    "error_type",
    "run_id",
    "started_at",
    "result",
    "errors",
    "max_attempts",
    "timeout_s",
    "after_ids",
    "after_policy",
    "webhook",
    "parent_id",
    "tenant",
    "rate_key",
    "concurrency_key",
    "fair_key",
    "traceparent",
)
"""A job's stored fields, in the order of a row. ``after_ids`` is the JSON text of the parents'
ids (NULL: none), ``after_policy`` NULL for the default (``completed``)."""

_STATES: Final = {s.value: s for s in JobState}
_from_epoch: Final = datetime.fromtimestamp


def job_from_row(row: Sequence[Any], created: bool = True, *, epoch_times: bool = False) -> Job:
    """The job a row of :data:`COLUMNS` describes.

    Times are aware datetimes, or with ``epoch_times`` epoch seconds; unset ones are None.
    ``created``: False for the existing job an enqueue found under the same (queue, key).
    """
    run_at, created_at, updated_at, finished_at = row[9], row[10], row[11], row[12]
    expires, started_at, result, errors = row[14], row[21], row[22], row[23]
    if epoch_times:  # spelled out: this runs for every job leased
        run_at = None if run_at is None else _from_epoch(run_at, UTC)
        created_at = None if created_at is None else _from_epoch(created_at, UTC)
        updated_at = None if updated_at is None else _from_epoch(updated_at, UTC)
        finished_at = None if finished_at is None else _from_epoch(finished_at, UTC)
        expires = None if expires is None else _from_epoch(expires, UTC)
        started_at = None if started_at is None else _from_epoch(started_at, UTC)
    return Job(
        id=row[0],
        queue=row[1],
        payload=PayloadText(row[2]),
        state=_STATES[row[3]],
        key=row[4],
        priority=row[5],
        attempt=row[6],
        deliveries=row[7],
        defers=row[8],
        run_at=run_at,
        created_at=created_at,
        updated_at=updated_at,
        finished_at=finished_at,
        lease_token=row[13],
        lease_expires_at=expires,
        worker_id=row[15],
        progress_pct=row[16],
        progress_message=row[17],
        error=row[18],
        error_type=row[19],
        run_id=row[20],
        started_at=started_at,
        result=None if result is None else StoredText(result),
        errors=() if errors is None else StoredText(errors),  # type: ignore[arg-type]
        max_attempts=row[24],
        timeout_s=row[25],
        after=_NO_PARENTS if row[26] is None else tuple(jsonio.loads(row[26])),
        after_policy=row[27] or "completed",
        webhook=row[28],
        parent_id=row[29],
        tenant=row[30],
        rate_key=row[31],
        concurrency_key=row[32],
        fair_key=row[33],
        traceparent=row[34],
        created=created,
    )


_NO_PARENTS: Final[tuple[int, ...]] = ()


def job_from_hash(job_id: int | str, fields: Mapping[str, str], created: bool = True) -> Job:
    """The job whose hash holds ``fields`` (every value text, an unset field absent)."""
    return job_from_row(_row_from_hash(job_id, fields), created, epoch_times=True)


def _row_from_hash(job_id: int | str, fields: Mapping[str, str]) -> tuple[Any, ...]:
    # Spelled out field by field, in the order of COLUMNS: a loop over the names with a
    # conversion per kind of field costs a third more per job leased.
    get = fields.get
    return (
        int(job_id),
        fields["queue"],
        fields["payload"],
        fields["state"],
        get("key"),
        int(get("priority", 0)),
        int(get("attempt", 0)),
        int(get("deliveries", 0)),
        int(get("defers", 0)),
        _number(get("run_at")),
        _number(get("created_at")),
        _number(get("updated_at")),
        _number(get("finished_at")),
        get("lease_token"),
        _number(get("lease_expires_at")),
        get("worker_id"),
        _number(get("progress")),
        get("progress_message"),
        get("error"),
        get("error_type"),
        get("run_id"),
        _number(get("started_at")),
        get("result"),
        get("errors"),
        _whole(get("max_attempts")),
        _number(get("timeout_s")),
        get("after_ids"),
        get("after_policy"),
        get("webhook"),
        _whole(get("parent_id")),
        get("tenant"),
        get("rate_key"),
        get("concurrency_key"),
        get("fair_key"),
        get("traceparent"),
    )


def _number(text: str | None) -> float | None:
    return None if text is None else float(text)


def _whole(text: str | None) -> int | None:
    return None if text is None else int(text)
