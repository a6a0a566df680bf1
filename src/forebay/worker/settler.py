"""The settler: records the outcomes of handler calls in the store, many per round trip.

A lane hands it the outcomes of one handler call (:meth:`Settler.record`). Outcomes are
coalesced by the one group-commit mechanism (:class:`~forebay.group_commit.GroupCommit`, one
flush in flight): while a flush is being written, new outcomes pile up and all go into the next
one, so under load each flush carries many jobs, yet an idle worker's outcome is written at
once. A flush decides each outcome once (:func:`~forebay.worker.decision.decide`), sends the
four kinds of transition (complete, retry, dead-letter, defer) concurrently, tells the
observers what was recorded, then starts the queues' hooks (``on_success``, ``on_failure``,
``on_exhausted``) of the recorded outcomes, each in a task of its own (:mod:`.hooks`): a hook
never holds the next flush, and never runs for an outcome the store refused.

A transition the store refused (the lease was lost: another worker owns the job) or that failed
is not reported: the job runs again once its lease expires (at-least-once, DESIGN §3.2).

Concurrency hazards, and why they are safe: :meth:`Settler.record` queues the outcomes before
its caller next yields to the event loop, so a lane that then waits for :meth:`Settler.drained`
waits for them too; with one flush in flight, the transitions of one job are never written by
two flushes at once, and ``processed`` and the observers are only touched by that flush.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from forebay.backends.base import Backend
from forebay.errors import BackendError
from forebay.group_commit import GroupCommit
from forebay.job import (
    MAX_ERRORS_KEPT,
    AttemptError,
    Completion,
    Deferral,
    Failure,
    Job,
    Lease,
    Retry,
)
from forebay.observer import Observer, notify_settled
from forebay.outcome import JobOutcome
from forebay.queue_config import QueueConfig
from forebay.tracing import NOT_PROCESSED, Processing
from forebay.worker.decision import Decision, decide
from forebay.worker.hooks import Hooks, hooks_for

__all__ = ["Finished", "Settler"]

log = logging.getLogger("forebay.worker")


@dataclass(slots=True)
class Finished:
    """A job whose handler call ended: with ``error`` (None: success) after ``duration_s``,
    returning ``result_json`` (the result to store, as JSON text; None: none).

    Treat it as read-only; not frozen only because one is made per job on the hot path, and a
    frozen dataclass costs several times more to build (as :class:`~forebay.job.Job`).
    """

    job: Job
    config: QueueConfig
    error: BaseException | None
    duration_s: float
    result_json: str | None = None
    span: Processing = NOT_PROCESSED
    """The span the call ran in: told the recorded outcome, ended by the flush."""


class Settler:
    """Records outcomes in batches; see the module docstring."""

    def __init__(self, backend: Backend, observers: Sequence[Observer]) -> None:
        self._backend = backend
        self._observers = list(observers)
        self.processed = 0
        """Jobs whose outcome was recorded (any outcome)."""
        self.hooks = Hooks()
        """The hook calls of recorded outcomes (the worker waits for them as it stops)."""
        # Every pending outcome goes into the next flush, as many as there are: the backends
        # write each transition's batch in one statement or script, whatever its size.
        self._commit: GroupCommit[list[Finished], None] = GroupCommit(
            "settler", self._flush, weight=len, max_weight=sys.maxsize, max_in_flight=1
        )

    def record(self, finished: list[Finished]) -> None:
        """Record the outcomes of one handler call, in the next flush (:meth:`drained` waits
        for it). A flush answers every call with None, having logged what it could not write
        (those jobs run again when their leases expire), so nobody needs to wait for it."""
        self._commit.submit_nowait(finished)

    async def drained(self) -> None:
        """Wait until every outcome recorded so far is written."""
        await self._commit.drain()

    async def _flush(self, calls: list[list[Finished]]) -> list[None]:
        outcomes = [finished for call in calls for finished in call]
        try:
            await self._settle(outcomes)
        except BackendError as exc:
            log.error(
                "could not record %d job outcomes (%s); they will be redelivered",
                len(outcomes),
                exc,
            )
        except Exception:
            # The jobs stay running; their leases expire and they run again (at-least-once).
            log.exception(
                "could not record %d job outcomes; they will be redelivered", len(outcomes)
            )
        finally:
            for finished in outcomes:  # recorded or not: a batch's span ends once
                finished.span.end()
        return [None] * len(calls)

    async def _settle(self, outcomes: list[Finished]) -> None:
        now = time.time()
        decisions = [decide(f.job, f.config, f.error, now, result=f.result_json) for f in outcomes]
        cancelled = {f.job.id for f in outcomes if f.job.cancel_requested}
        refused = await self._write(decisions, cancelled)
        self.processed += len(outcomes) - len(refused)
        for finished, decision in zip(outcomes, decisions, strict=True):
            if finished.job.id in refused:
                continue
            job = finished.job
            if decision.error_text is not None:  # observers see the error that caused it
                job = _with_error(job, decision, now)
            notify_settled(self._observers, job, decision.outcome, finished.duration_s)
            finished.span.settled(job, decision.outcome, decision.transition)
            config = finished.config
            if config.on_success or config.on_failure or config.on_exhausted:
                calls = hooks_for(
                    job,
                    config,
                    decision.outcome,
                    error=decision.error,
                    result_json=finished.result_json,
                )
                self.hooks.start(config, calls)

    async def _write(self, decisions: list[Decision], cancelled: set[int]) -> set[int]:
        """Send the transitions; return the ids whose outcome was not recorded (``cancelled``:
        jobs an operator cancelled while they ran, whose outcome the store refuses as asked)."""
        completes: list[Lease | Completion] = []
        retries: list[Retry] = []
        failures: list[Failure] = []
        deferrals: list[Deferral] = []
        for d in decisions:
            t = d.transition
            if isinstance(t, Lease | Completion):
                completes.append(t)
            elif isinstance(t, Retry):
                retries.append(t)
            elif isinstance(t, Failure):
                failures.append(t)
            else:
                deferrals.append(t)
        results = await asyncio.gather(
            self._backend.complete(completes) if completes else _none(),
            self._backend.retry(retries) if retries else _none(),
            self._backend.dead_letter(failures) if failures else _none(),
            self._backend.defer(deferrals) if deferrals else _none(),
            return_exceptions=True,  # one transition failing leaves the others recorded
        )
        kinds = (
            [c.job_id if isinstance(c, Lease) else c.lease.job_id for c in completes],
            [r.lease.job_id for r in retries],
            [f.lease.job_id for f in failures],
            [d.lease.job_id for d in deferrals],
        )
        return _refused(kinds, results, cancelled)


def _with_error(job: Job, decision: Decision, now: float) -> Job:
    """``job`` as its failed attempt left it: that error last, and in its history."""
    if decision.outcome is JobOutcome.DEFERRED:  # a defer is not a failed attempt
        return replace(job, error=decision.error_text, error_type=decision.error_type)
    entry = AttemptError(
        attempt=job.attempt,
        at=datetime.fromtimestamp(now, UTC),
        type=decision.error_type or "",
        message=decision.error_text or "",
        traceback=decision.traceback,
    )
    history = (*job.errors, entry)[-MAX_ERRORS_KEPT:]
    return replace(job, error=decision.error_text, error_type=decision.error_type, errors=history)


def _refused(
    kinds: Sequence[list[int]],
    results: Sequence[list[int] | BaseException],
    cancelled: set[int],
) -> set[int]:
    """The ids whose outcome was not recorded: refused (lease lost, or cancelled), or whose
    transition failed (they keep running until their lease expires, then run again)."""
    refused: set[int] = set()
    lost: set[int] = set()
    for ids, result in zip(kinds, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result  # cancelled
            log.error(
                "could not record %d job outcomes (%s); they will be redelivered", len(ids), result
            )
            refused.update(ids)
        else:
            lost.update(result)
    if lost - cancelled:
        log.warning(
            "lease lost before settling jobs %s; another worker owns them", sorted(lost - cancelled)
        )
    if lost & cancelled:
        log.info(
            "jobs %s were cancelled while they ran; outcome not recorded", sorted(lost & cancelled)
        )
    return refused | lost


async def _none() -> list[int]:
    return []
