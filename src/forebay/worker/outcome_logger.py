"""The worker's log line per outcome, written by an observer like the intake's enqueue lines.

Every state change has one log line carrying ``job_id``, ``queue`` and ``attempt``:
:class:`OutcomeLogger` writes the worker's (logger ``forebay.worker``): completions at DEBUG, so
a busy worker pays for them only when asked, the other outcomes at INFO with the error::

    job 42 retrying job_id=42 queue=documents attempt=1 outcome=retry
    error="TimeoutError: handler ran longer than timeout_s=300"

A retry or dead letter also carries the ``traceback`` of the error (the text kept in the job's
errors history; one field, its newlines escaped in the text format). With ``--log-level debug``
the worker also logs every lease (``job 42 leased by worker host:123:ab, attempt 2, delivery
2``) and every ``job.progress()`` (:func:`log_progress`), so a job's life reads from the log
alone: leased, progress, outcome.

The ``outcome`` field keeps the words log searches and pipelines match on (``complete``,
``retry``, ``defer``, ``dead``). Jobs released at shutdown are not logged one by one: the worker
logs how many it released.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from forebay.job import Job
from forebay.outcome import JobOutcome

__all__ = ["OutcomeLogger", "log_progress"]

log = logging.getLogger("forebay.worker")

_MESSAGE: Final = {
    JobOutcome.COMPLETED: "completed",
    JobOutcome.RETRIED: "retrying",
    JobOutcome.DEFERRED: "deferred",
    JobOutcome.DEAD: "dead",
}
_FIELD: Final = {
    JobOutcome.COMPLETED: "complete",
    JobOutcome.RETRIED: "retry",
    JobOutcome.DEFERRED: "defer",
    JobOutcome.DEAD: "dead",
}


class OutcomeLogger:
    """An observer that logs each recorded outcome (see the module docstring)."""

    def enqueued(self, jobs: Sequence[Job]) -> None:
        """Enqueues are logged by the intake (``forebay.intake``)."""

    def settled(self, job: Job, outcome: JobOutcome, duration_s: float) -> None:
        message = _MESSAGE.get(outcome)
        if message is None:  # released: counted in one line by the worker
            return
        completed = outcome == JobOutcome.COMPLETED
        level = logging.DEBUG if completed else logging.INFO
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "job %s %s",
            job.id,
            message,
            extra={
                "job_id": job.id,
                "queue": job.queue,
                "attempt": job.attempt,
                "outcome": _FIELD[outcome],
                "error": None if completed else job.error,
                "traceback": _traceback(job, outcome),
            },
        )


def _traceback(job: Job, outcome: JobOutcome) -> str | None:
    """The traceback of the error that made ``job`` retry or die (the settler appends it to
    the job's history before telling observers)."""
    if outcome not in (JobOutcome.RETRIED, JobOutcome.DEAD) or not job.errors:
        return None
    return job.errors[-1].traceback


def log_progress(job_id: int, pct: float, message: str | None) -> None:
    """A DEBUG line for a handler's ``job.progress()`` (recorded in the store beside it)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "job %s progress %g%%%s",
            job_id,
            pct,
            f": {message}" if message else "",
            extra={"job_id": job_id, "progress": pct, "progress_message": message},
        )
