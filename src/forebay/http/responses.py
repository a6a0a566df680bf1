"""The answers several routes give: a stored job, a page of jobs, and when to build them off the
event loop.

A route answers only after the jobs are durable (DESIGN §6), with 201 when the request stored
something new and 200 when every job's key was already stored. Bodies and answers above a size
are parsed, split and rendered in a worker thread (:func:`off_loop`), so one big bulk delivery
does not hold up the other requests' answers for a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.responses import JSONResponse, Response

from forebay.job import Job

__all__ = ["OFF_LOOP_BYTES", "OFF_LOOP_JOBS", "accepted", "jobs_page", "off_loop", "status"]

T = TypeVar("T")

OFF_LOOP_BYTES = 256 * 1024
"""A body this large is parsed and turned into jobs in a worker thread."""
OFF_LOOP_JOBS = 500
"""An answer naming this many jobs is rendered in a worker thread."""


async def off_loop(work: Callable[[], T], *, heavy: bool) -> T:
    """``work()``, in a worker thread when ``heavy``, else right here."""
    return await asyncio.to_thread(work) if heavy else work()


def accepted(job: Job) -> dict[str, object]:
    """A stored job as the intake answers it (:class:`~forebay.http.models.JobAccepted`)."""
    return {
        "id": job.id,
        "queue": job.queue,
        "key": job.key,
        "state": str(job.state),
        "created": job.created,
        "run_at": None if job.run_at is None else job.run_at.isoformat(),
    }


def status(jobs: list[Job]) -> int:
    """201 when the request stored a new job; 200 when every job was already stored."""
    return 201 if any(j.created for j in jobs) else 200


def jobs_page(jobs: list[Job], limit: int) -> Response:
    """A page of jobs, newest first, with the ``before_id`` of the next page (or null)."""
    next_id = jobs[-1].id if len(jobs) == limit else None
    jobs_out = [j.to_dict(detail=False) for j in jobs]  # compact: no results, no tracebacks
    return JSONResponse({"jobs": jobs_out, "next_before_id": next_id})
