"""The observation seam: where metrics, logs and traces learn what happened to jobs.

The app and its workers call every registered :class:`Observer` at the seams (after an enqueue
committed, after an outcome was recorded), so instrumentation lives in one place and never in
backends. Observer methods run on the event loop's hot path: they must be quick and must not
raise (an exception is logged and swallowed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeAlias

from forebay.job import Job
from forebay.outcome import JobOutcome

__all__ = ["JobOutcome", "Observer", "Outcome", "notify_enqueued", "notify_settled"]

log = logging.getLogger("forebay.observer")

Outcome: TypeAlias = JobOutcome
"""The name observers were written against; the same enum as :class:`JobOutcome`."""


class Observer(Protocol):
    def enqueued(self, jobs: Sequence[Job]) -> None:
        """Jobs were committed (``job.created`` is False for a duplicate key)."""

    def settled(self, job: Job, outcome: JobOutcome, duration_s: float) -> None:
        """A job's run ended with ``outcome`` after ``duration_s`` in its handler.

        ``job`` is the job as its handler got it; for an outcome an error caused (``retried``,
        ``dead``, and ``deferred`` by :class:`~forebay.Defer`) its ``error`` and ``error_type``
        describe that error, as the worker recorded it.
        """


def notify_enqueued(observers: Sequence[Observer], jobs: Sequence[Job]) -> None:
    for observer in observers:
        try:
            observer.enqueued(jobs)
        except Exception:
            log.exception("observer %r failed in enqueued()", observer)


def notify_settled(
    observers: Sequence[Observer], job: Job, outcome: JobOutcome, duration_s: float
) -> None:
    for observer in observers:
        try:
            observer.settled(job, outcome, duration_s)
        except Exception:
            log.exception("observer %r failed in settled()", observer)
