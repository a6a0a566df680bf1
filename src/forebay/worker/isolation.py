"""Crash isolation: which leased jobs a worker may run beside others, and which must run alone.

A job whose handler kills its worker process (a segfault in a parser, the OOM killer) takes
every job running beside it down too. Counting that crash against all of them would send the
bystanders to the dead letters with the poison job once ``max_deliveries`` is reached. So a job
that was running when a worker died — a *suspect*: it was delivered more often than it was
tried, since a crash gives back the attempt but not the delivery — runs alone in its worker
process, with nothing else running there, until it finishes once. A suspect that kills its
worker again did it by itself; only it accumulates crash deliveries, and only it ends
``dead / CrashLoop``.

The decision is a pure function of the leased jobs and whether anything else runs in the
process; the worker's lanes apply it (:mod:`forebay.worker.lanes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from forebay.errors import ForebayError
from forebay.job import Job

__all__ = ["Admission", "HandlerProcessDied", "admit", "crashed_before"]


class HandlerProcessDied(ForebayError):
    """The process running a handler call died during it (``forebay worker --processes``,
    ``forebay serve --worker-processes``: :mod:`forebay.execution`).

    Not an error of the job: it is treated as if its worker had died. The worker does not
    settle the job and stops renewing its lease; the lease expires, the job comes back with a
    crash delivery, and it runs alone (see the module docstring). Raising it as a transient
    error instead would spend an attempt of every job the dead process was running.
    """


def crashed_before(job: Job) -> bool:
    """A leased job that a worker died holding: delivered more often than tried.

    A lease counts one attempt and one delivery; an error keeps both spent; a defer and a
    graceful release give both back; an expired lease (the worker died) gives back only the
    attempt. So ``deliveries - attempt`` is the number of crashes the job was part of.
    """
    return job.deliveries > job.attempt


@dataclass(frozen=True, slots=True)
class Admission:
    """What a worker does with the jobs of one lease."""

    start: list[Job] = field(default_factory=list)
    """Run now, beside whatever else runs."""
    alone: Job | None = None
    """A suspect to run alone: the process runs nothing else until it finishes."""
    release: list[Job] = field(default_factory=list)
    """Give back unrun (attempt and delivery returned), to be leased again."""
    drain: bool = False
    """A suspect was given back because other jobs run here: lease nothing more until they
    finish, then lease again to run it alone."""


def admit(jobs: Sequence[Job], *, others_running: bool) -> Admission:
    """Split one lease's jobs (in lease order) into those to start, to run alone, to give back.

    No suspect: start them all. With suspects and nothing else running in the process: run the
    first suspect alone and give back every other job. With suspects while other jobs run:
    start the innocent ones, give back the suspects, and drain before leasing again.
    """
    suspects = [job for job in jobs if crashed_before(job)]
    if not suspects:
        return Admission(start=list(jobs))
    if not others_running:
        first = suspects[0]
        return Admission(alone=first, release=[job for job in jobs if job is not first])
    return Admission(
        start=[job for job in jobs if not crashed_before(job)], release=suspects, drain=True
    )
