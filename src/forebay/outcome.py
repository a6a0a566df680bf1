"""What became of one run of a job: the one vocabulary the worker, logs, metrics and observers
share.

A run ends in exactly one :class:`JobOutcome`, decided once by the worker
(:func:`forebay.worker.decision.decide`) and then reported as that same value everywhere: to the
backend as a transition, to observers (:mod:`forebay.observer`), in Prometheus counters
(``forebay_jobs_<outcome>_total``) and in the worker's log lines.
"""

from __future__ import annotations

import enum

__all__ = ["JobOutcome"]


class JobOutcome(enum.StrEnum):
    """How a job's run ended (DESIGN §3.4, §3.8). A ``str``: ``JobOutcome.DEAD == "dead"``."""

    COMPLETED = "completed"
    """The handler succeeded: the job is ``completed``."""
    RETRIED = "retried"
    """It failed transiently with attempts left: queued again after its backoff."""
    DEFERRED = "deferred"
    """The handler raised :class:`~forebay.Defer`: queued again, no attempt spent."""
    DEAD = "dead"
    """A permanent error, attempts or defers exhausted, or a crash loop: dead-lettered."""
    RELEASED = "released"
    """Still running at shutdown past the grace: queued again, no attempt spent."""
