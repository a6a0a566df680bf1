"""What a run's outcome does to its job: one pure decision, made once per outcome.

DESIGN §3.3–3.5, as functions of their inputs only (no backend, no clock, no worker):

* no error → **completed** (with the handler's result, when it returned one);
* :class:`~forebay.Defer` → **deferred** to ``now + delay`` while ``defers < max_defers``;
  past that, the defer counts as an error (``RuntimeError: deferred N times (max_defers)``);
* :class:`~forebay.PermanentError` (a crash loop is one: :func:`crash_loops`) → **dead**;
* any other error, a timeout included → **retried** at ``now + backoff`` while
  ``attempt < max_attempts`` (the job's own, given at enqueue, else its queue's), else **dead**.

:func:`decide` returns a :class:`Decision`: the outcome, the transition to ask the backend for
(:class:`~forebay.job.Lease` or :class:`~forebay.job.Completion` to complete,
:class:`~forebay.job.Retry`, :class:`~forebay.job.Failure`, :class:`~forebay.job.Deferral`),
the error as classified (what ``on_exhausted`` gets), its stored text and its traceback.
The settler computes it once and hands that same decision to the backend, to observers and
to the hook. Backoff jitter is the only randomness: give ``rng`` to make it repeatable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from forebay.errors import Defer, PermanentError
from forebay.job import Completion, Deferral, Failure, Job, Lease, Retry
from forebay.outcome import JobOutcome
from forebay.queue_config import QueueConfig

__all__ = [
    "MAX_ERROR_CHARS",
    "CrashLoop",
    "Decision",
    "call_timeout_s",
    "crash_loops",
    "decide",
    "delivery_limit",
    "describe",
    "traceback_of",
]

MAX_ERROR_CHARS = 4000
"""Longest error text stored with a job."""


class CrashLoop(PermanentError):
    """A job was leased more often than ``max_deliveries`` without finishing: whatever runs
    it keeps dying. Stored as error type ``CrashLoop``."""


@dataclass(slots=True)
class Decision:
    """What to do with one run's outcome. See the module docstring.

    Treat it as read-only; not frozen only because one is made per job on the hot path, and a
    frozen dataclass costs several times more to build (as :class:`~forebay.job.Job`).
    """

    outcome: JobOutcome
    transition: Lease | Completion | Retry | Failure | Deferral
    """The backend call's argument: complete, retry, dead-letter or defer."""
    error: BaseException | None = None
    """The error as classified (for ``dead``: what ``on_exhausted`` receives)."""
    error_text: str | None = None
    """``error`` as stored and logged: ``"Type: message"``, at most :data:`MAX_ERROR_CHARS`."""
    error_type: str | None = None
    traceback: str | None = None
    """Where ``error`` was raised (:func:`traceback_of`), for a retry or dead letter."""


def decide(
    job: Job,
    config: QueueConfig,
    error: BaseException | None,
    now: float,
    *,
    rng: random.Random | None = None,
    result: str | None = None,
) -> Decision:
    """The transition for ``job`` (leased, run under ``config``) whose handler ended with
    ``error`` (None: success, returning ``result`` as JSON text), at ``now`` (epoch seconds).
    Never changes its arguments."""
    if error is None:
        if result is None:
            return Decision(JobOutcome.COMPLETED, job.lease)
        return Decision(JobOutcome.COMPLETED, Completion(job.lease, result))
    if isinstance(error, Defer):
        if job.defers < config.max_defers:
            text, kind = describe(error)
            deferral = Deferral(job.lease, now + error.delay_s, error.reason)
            return Decision(JobOutcome.DEFERRED, deferral, error, text, kind)
        error = RuntimeError(f"deferred {job.defers} times (max_defers): {error.reason}")
    text, kind = describe(error)
    where = traceback_of(error)
    limit = config.max_attempts if job.max_attempts is None else job.max_attempts
    if isinstance(error, PermanentError) or job.attempt >= limit:
        failure = Failure(job.lease, text, kind, where)
        return Decision(JobOutcome.DEAD, failure, error, text, kind, failure.traceback)
    run_at = now + config.backoff.delay_s(job.attempt, rng)
    retry = Retry(job.lease, run_at, text, kind, where)
    return Decision(JobOutcome.RETRIED, retry, error, text, kind, retry.traceback)


def crash_loops(jobs: Sequence[Job], config: QueueConfig) -> list[tuple[Job, CrashLoop]]:
    """The leased jobs delivered more often than their queue's ``max_deliveries`` (leased more
    often than they ever finished), each with the error that dead-letters it. A job given its
    own ``max_attempts`` is allowed at least that many deliveries (every attempt is one), and
    ``max_attempts + 3`` when the queue sets no ``max_deliveries``."""
    return [
        (
            job,
            CrashLoop(
                f"delivered {job.deliveries} times without finishing "
                f"(max_deliveries={delivery_limit(job, config)}): its worker keeps dying"
            ),
        )
        for job in jobs
        if job.deliveries > delivery_limit(job, config)
    ]


def delivery_limit(job: Job, config: QueueConfig) -> int:
    """The most leases ``job`` may take without finishing (see :func:`crash_loops`)."""
    if job.max_attempts is None:
        return config.delivery_limit
    if config.max_deliveries is None:
        return job.max_attempts + 3
    return max(config.max_deliveries, job.max_attempts)


def call_timeout_s(jobs: Sequence[Job], config: QueueConfig) -> float:
    """The time one handler call of ``jobs`` may take: a job's own ``timeout_s`` when given,
    else the queue's (for a batch, the longest of its jobs')."""
    if len(jobs) == 1:
        own = jobs[0].timeout_s
        return config.timeout_s if own is None else own
    return max(config.timeout_s if j.timeout_s is None else j.timeout_s for j in jobs)


def describe(error: BaseException) -> tuple[str, str]:
    """``(text, type name)`` of an error as stored with its job."""
    if isinstance(error, CrashLoop):
        return str(error)[:MAX_ERROR_CHARS], "CrashLoop"
    name = type(error).__name__
    text = f"{name}: {error}" if str(error) else name
    return text[:MAX_ERROR_CHARS], name


def traceback_of(error: BaseException) -> str | None:
    """Where ``error`` was raised, as Python prints it (chained errors included); for an error
    raised in a handler process, the traceback it had there (``remote_traceback``). None for
    an error that was never raised (a crash loop, too many defers)."""
    remote = getattr(error, "remote_traceback", None)
    if isinstance(remote, str):
        return remote
    if error.__traceback__ is None:
        return None
    described = traceback.TracebackException.from_exception(error)
    frames = list(described.stack)
    first = 0  # the handler's own frames first: forebay and asyncio calling it are noise
    while first < len(frames) - 1 and frames[first].filename.startswith(_CALLERS):
        first += 1
    described.stack = traceback.StackSummary.from_list(frames[first:])
    return "".join(described.format()).rstrip()


_FOREBAY = Path(__file__).parents[1]  # as frames name files: not resolved
_CALLERS = tuple(
    str(folder) + os.sep
    for folder in (
        _FOREBAY / "worker",
        _FOREBAY / "execution",
        Path(asyncio.__file__).parent,
        Path(concurrent.futures.__file__).parent,
    )
)
"""Folders of the code that calls handlers: forebay's worker and handler processes, asyncio,
thread pools."""
