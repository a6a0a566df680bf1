"""The lanes: per queue, lease up to the free concurrency and run each job's handler call.

One lane per queue leases as many jobs as the queue has free slots (``concurrency``, times
``batch_size`` for batch handlers) in one call, and starts one task per job (or per batch) that
calls the handler (:func:`~forebay.worker.calls.call_handler`) and hands the outcome to the
settler. When every slot is taken the lane waits for one to free; when the queue is empty it
waits for work (a notification, or ``idle_poll_s``). A backend outage does not end a lane: it
backs off (up to 5 s) and leases again, so a worker rides out a store restart of any length.

Before starting what it leased, a lane dead-letters crash loops (leased more often than
``max_deliveries``) and applies crash isolation (:mod:`forebay.worker.isolation`): a job that
was running when a worker died runs alone until it finishes once.

A queue's flow limits are the job store's to enforce (:mod:`forebay.flow`): a lease takes only what
they allow. When it takes fewer jobs than asked because a rate has no token for the rest
(``Leased.throttled_until``), the lane leases again when the token frees, or sooner when new work
arrives, the limits change or (on a queue with a cap on running jobs) a call finishes; so a rate
with a backlog is used to the full, and no lease is spent polling in between. (Jobs held back by a
cap on running jobs wait for a finish: this worker's wakes the lane; another worker's is seen at the
next idle poll.)

In burst mode the worker is done once every lane at once finds nothing due and nothing runs:
a job finishing in one queue may enqueue work in another (a webhook delivery, a run's
completion job, a handler's child job), so a lane whose queue is empty waits while others run
jobs, and looks again after each finish. A lane whose due jobs are held back by a rate is not
done: a burst worker waits for their tokens and runs them, so it still drains the queue, at the
rate (and when the last job took the last token, it waits for the next one before it finds the
queue empty). Jobs held back only by a cap that other workers' running jobs hold are theirs to
drain.

Concurrency hazards, and why they are safe: all lanes and handler tasks share one event loop,
so the counters, the registry of running calls and the isolation state change only between
awaits; each place where a check and the change it guards must not be split says so.

A slot is taken from the lease until the handler call really ends. A plain ``def`` handler that
overran its timeout still holds its slot (and its job its lease, renewed by the heartbeat)
until its thread returns (:mod:`forebay.worker.calls`): the queue then runs with one slot
fewer, and never more than ``concurrency`` calls at once, threads that timed out included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from forebay.backends.base import Backend, Leased
from forebay.cancel import cancel_and_wait
from forebay.errors import BackendError
from forebay.job import Job, Lease
from forebay.queue_config import QueueConfig
from forebay.tracing import Tracing
from forebay.worker.calls import BatchErrors, call_handler
from forebay.worker.decision import call_timeout_s, crash_loops
from forebay.worker.isolation import Admission, HandlerProcessDied, admit
from forebay.worker.outcome_logger import log_progress
from forebay.worker.settings import WorkerSettings
from forebay.worker.settler import Finished, Settler

__all__ = ["CANCEL_REQUESTED", "Lanes", "Running"]

CANCEL_REQUESTED: Final = "forebay: the job was cancelled"
"""The message of the cancellation that stops a cancelled job's handler call (a handler pool
reads it to stop the call in its handler process too)."""

log = logging.getLogger("forebay.worker")

T = TypeVar("T")

_MIN_THROTTLE_WAIT_S: Final = 0.002
"""The shortest wait for a rate's token: a store clock a little behind this one's must not make
the lane lease in a tight loop."""


@dataclass(slots=True)
class Running:
    """A job whose handler call is in flight, and the task running that call (read-only; not
    frozen only because one is made per job on the hot path)."""

    job: Job
    config: QueueConfig
    task: asyncio.Task[None]


class Lanes:
    """The lanes of one worker's queues; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        queues: Sequence[QueueConfig],
        settings: WorkerSettings,
        settler: Settler,
        *,
        worker_id: str,
        stopping: asyncio.Event,
        tracing: Tracing | None = None,
    ) -> None:
        self._backend = backend
        self._tracing = tracing or Tracing()
        self._queues = list(queues)
        self._settings = settings
        self._settler = settler
        self._worker_id = worker_id
        self._stopping = stopping
        self.running: dict[int, Running] = {}
        """Job id → its call in flight."""
        self._count: dict[str, int] = {q.name: 0 for q in queues}
        self._slot_freed: dict[str, asyncio.Event] = {q.name: asyncio.Event() for q in queues}
        # Crash isolation (see forebay.worker.isolation): the suspect running alone, the queue
        # whose suspect waits for this process to drain, and a signal when either may change.
        self._alone: int | None = None
        self._drain_for: str | None = None
        self._isolation_changed = asyncio.Event()
        # Burst mode: the lanes that found nothing due since a job was last leased or finished,
        # the handler calls finished so far, and the signal of the next finish (a new event
        # each time: none is missed).
        self._idle: set[str] = set()
        self._finished_calls = 0
        # Lanes whose last wait for work returned while a limit still held their due jobs.
        self._woken_for_nothing: set[str] = set()
        self._activity = asyncio.Event()

    async def run(self) -> None:
        """Lease and run until stopping (or, in burst mode, until every queue is idle)."""
        lanes = [
            asyncio.create_task(self._lane(q), name=f"forebay-lane-{q.name}") for q in self._queues
        ]
        try:
            await asyncio.gather(*lanes)
        finally:
            await cancel_and_wait(lanes)

    def leases(self) -> dict[str, list[Lease]]:
        """The leases of the running jobs, by queue."""
        by_queue: dict[str, list[Lease]] = {}
        for entry in list(self.running.values()):
            by_queue.setdefault(entry.config.name, []).append(entry.job.lease)
        return by_queue

    def cancel(self, job_id: int) -> None:
        """Cancel the handler call running ``job_id`` (its lease was lost), if any."""
        entry = self.running.get(job_id)
        if entry is not None:
            log.warning("lease of job %s was lost; cancelling its handler", job_id)
            entry.task.cancel()

    def stop_cancelled(self, job_id: int) -> None:
        """An operator cancelled ``job_id`` while it ran here: stop its handler call.

        The job is marked (``job.cancel_requested``). An ``async def`` handler's call is
        cancelled once every job it holds is (a batch's other jobs go on); a plain ``def``
        handler runs in a thread that cannot be interrupted, so it polls the mark and returns
        early, and its outcome is refused like any stale one. (A handler pool stops the call in
        its process: see :mod:`forebay.execution.pool`.)
        """
        entry = self.running.get(job_id)
        if entry is None or entry.job.cancel_requested:
            return
        entry.job.cancel_requested = True
        log.info(
            "job %s was cancelled; stopping its handler",
            job_id,
            extra={"job_id": job_id, "queue": entry.config.name},
        )
        siblings = [e.job for e in self.running.values() if e.task is entry.task]
        if entry.config.is_async and all(job.cancel_requested for job in siblings):
            entry.task.cancel(CANCEL_REQUESTED)

    def wake(self) -> None:
        """Make every waiting lane lease again (jobs were requeued)."""
        for event in self._slot_freed.values():
            event.set()

    # -- leasing ---------------------------------------------------------------------------
    async def _lane(self, config: QueueConfig) -> None:
        pause_s = 0.1
        while not self._stopping.is_set():
            try:
                if await self._lane_step(config):
                    return
                pause_s = 0.1
            except BackendError as exc:
                log.warning(
                    "queue %s: cannot lease (%s); trying again in %.1fs", config.name, exc, pause_s
                )
                await self._until(asyncio.sleep(pause_s))
                pause_s = min(pause_s * 2, 5.0)

    async def _lane_step(self, config: QueueConfig) -> bool:
        """One round of leasing; True when a burst lane has nothing left to do."""
        if self._isolation_blocks(config.name):
            self._isolation_changed.clear()  # no await since the check: no change is missed
            await self._until(self._isolation_changed.wait())
            return False
        freed = self._slot_freed[config.name]
        free = config.concurrency - self._count[config.name]
        if free <= 0:
            freed.clear()
            await self._until(freed.wait())
            await asyncio.sleep(0)  # let sibling completions land: lease in bigger batches
            return False
        asked = free * (config.batch_size or 1)
        finished = self._finished_calls
        jobs = await self._lease(config, asked)
        if jobs:
            self._woken_for_nothing.discard(config.name)
            await self._admit(config, jobs)
        if jobs.throttled_until is not None and len(jobs) < asked:
            await self._throttled(config, jobs.throttled_until, finished)
            return False
        if jobs:
            return False
        if self._settings.burst:
            if self._count[config.name] == 0:
                finished = self._finished_calls
                await self._settler.drained()
                if await self._has_due(config):
                    return False
                return await self._idle_everywhere(config.name, finished)
            freed.clear()
            await self._until(freed.wait())
            return False
        if self._capped(config):  # what is due may wait for a slot, not for work
            await self._held(config, self._settings.idle_poll_s, finished, on_time=False)
        else:
            await self._wait(config, self._settings.idle_poll_s, finished)
        return False

    async def _lease(self, config: QueueConfig, limit: int) -> Leased:
        jobs = await self._backend.lease(
            queue=config.name,
            limit=limit,
            worker_id=self._worker_id,
            lease_s=config.lease_s,
        )
        if jobs and log.isEnabledFor(logging.DEBUG):
            _log_leases(jobs, self._worker_id)
        return jobs

    async def _has_due(self, config: QueueConfig) -> bool:
        """In burst mode: is anything still due (e.g. a retry with no backoff, or a job a rate
        held back: then wait for its token)?"""
        finished = self._finished_calls
        jobs = await self._lease(config, 1)
        if jobs:
            await self._admit(config, jobs)
            return True
        if jobs.throttled_until is not None:
            await self._throttled(config, jobs.throttled_until, finished)
            return True
        return False

    async def _throttled(self, config: QueueConfig, until: float, finished: int) -> None:
        """A rate held back due jobs of ``config``'s queue until ``until`` (epoch seconds, the
        store's clock): wait until then, on time, or until something may let them go sooner
        (see :meth:`_held`)."""
        delay = max(until - time.time(), _MIN_THROTTLE_WAIT_S)
        await self._held(config, delay, finished, on_time=True)

    async def _held(
        self, config: QueueConfig, timeout_s: float, finished: int, *, on_time: bool
    ) -> None:
        """A limit holds the queue's due jobs: wait ``timeout_s`` at most, or until new work or
        new limits reach the queue (a job of another key may go at once), or, with a cap on
        running jobs, until a call finishes here (it may free a slot; without a cap, a finish
        changes nothing a rate holds).

        A backend's wait for work may return at once while any job is due, held ones too:
        when it did and the lease after it took nothing, the next wait is not for work, so
        held jobs cost at most two leases per token or idle poll, not a busy loop."""
        queue = config.name
        deadline = time.monotonic() + timeout_s
        woken = await self._wait(
            config,
            timeout_s,
            finished,
            for_work=queue not in self._woken_for_nothing,
            on_time=on_time,
            on_finish=self._capped(config),
        )
        if woken == "work" and time.monotonic() < deadline:
            self._woken_for_nothing.add(queue)  # kept only if the next lease takes nothing
        else:
            self._woken_for_nothing.discard(queue)

    async def _wait(
        self,
        config: QueueConfig,
        timeout_s: float,
        finished: int,
        *,
        for_work: bool = True,
        on_time: bool = False,
        on_finish: bool = False,
    ) -> str | None:
        """Wait ``timeout_s`` at most and say what ended the wait (None: stopping):

        * ``"work"`` (``for_work``): new work or new limits reached the queue
          (:meth:`Backend.wait_for_work`, which times out on its own, in its own steps);
        * ``"time"`` (``on_time``, or not ``for_work``): ``timeout_s`` passed, on time (a
          Redis server ends a blocking read only at its next tick, 100 ms on the default hz);
        * ``"finish"`` (``on_finish``): a call finished here, or one finished since the lease
          was asked (``finished``: the count then), and then there is no wait at all.
        """
        if on_finish and self._finished_calls != finished:
            return "finish"
        waits: list[tuple[str, Awaitable[object]]] = []
        if for_work:
            waits.append(("work", self._backend.wait_for_work([config.name], timeout_s=timeout_s)))
        if on_time or not for_work:
            waits.append(("time", asyncio.sleep(timeout_s)))
        if on_finish:
            freed = self._slot_freed[config.name]
            freed.clear()  # no await since the check above: a finish after it sets it again
            waits.append(("finish", freed.wait()))
        if len(waits) == 1:
            await self._until(waits[0][1])
            return waits[0][0]
        winner = await self._until(_first(*(waiting for _, waiting in waits)))
        return None if winner is None else waits[winner][0]

    @staticmethod
    def _capped(config: QueueConfig) -> bool:
        """Whether the queue declares a cap on running jobs (a finish may free a held job)."""
        limits = config.limits
        return limits.concurrency is not None or limits.concurrency_per_key is not None

    async def _idle_everywhere(self, queue: str, finished: int) -> bool:
        """Burst: ``queue`` had nothing due when ``finished`` calls had finished. True once
        every lane says so (nothing leased or finished since: each clears the set); else wait
        for the next finish, to look again."""
        if self._finished_calls != finished:  # one finished while we looked: look again
            return False
        self._idle.add(queue)
        if self._idle.issuperset(self._count):
            self._activity.set()  # the lanes waiting below are done too
            return True
        await self._until(self._activity.wait())
        return self._idle.issuperset(self._count)

    async def _until(self, awaitable: Awaitable[T]) -> T | None:
        """Await ``awaitable`` and return its result, unless the worker starts stopping first
        (then None)."""
        waiter = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([waiter, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            stopped = not waiter.done()
            if stopped:  # end what it was waiting on before going on
                await cancel_and_wait([waiter])
        if stopped or waiter.cancelled():
            return None
        return waiter.result()

    # -- admitting (crash loops, crash isolation) ------------------------------------------
    def _isolation_blocks(self, queue: str) -> bool:
        """May this lane not lease now? Not while a suspect runs alone; not while a suspect
        waits for the process to drain, except its own lane once nothing runs."""
        if self._alone is not None:
            return True
        if self._drain_for is None:
            return False
        return self._drain_for != queue or self._busy()

    def _busy(self) -> bool:
        return any(self._count.values())

    async def _admit(self, config: QueueConfig, jobs: list[Job]) -> None:
        """Start the leased jobs that may run now; give back those that may not (yet)."""
        self._idle.clear()
        looping = crash_loops(jobs, config)
        if looping:
            dead = {job.id for job, _ in looping}
            jobs = [job for job in jobs if job.id not in dead]
        decision = self._admission(config, jobs)
        for job, error in looping:  # leased more often than it ever finished: dead, not run
            self._spawn(config, [job], error)
        if decision.release:
            # Given back unrun (attempt and delivery returned) before the suspect starts: it may
            # kill this process at once. (Should this call fail, the jobs' leases expire and
            # they come back, counted as part of a crash.)
            try:
                await self._backend.release([job.lease for job in decision.release])
            except BaseException:
                if decision.alone is not None:  # not started: its lease expires, it comes back
                    self._alone = None
                    self._isolation_changed.set()
                raise
        if decision.alone is not None:
            job = decision.alone
            log.info(
                "job %s was running when a worker died; running it alone (delivery %d)",
                job.id,
                job.deliveries,
                extra={"job_id": job.id, "queue": job.queue, "deliveries": job.deliveries},
            )
            self._spawn(config, [job])
        self._start(config, decision.start)

    def _admission(self, config: QueueConfig, runnable: list[Job]) -> Admission:
        """Crash isolation's decision for one lease, applied to this process's state (no
        await in here: the state it reads is the state it changes)."""
        if self._alone is not None:
            # Another lane's suspect started while this lease was in flight: it runs alone.
            return Admission(release=runnable)
        decision = admit(runnable, others_running=self._busy())
        if self._drain_for == config.name or decision.drain:
            self._drain_for = config.name if decision.drain else None
        if decision.alone is not None:
            self._alone = decision.alone.id  # other lanes hold off from now on
        return decision

    # -- running ---------------------------------------------------------------------------
    def _start(self, config: QueueConfig, runnable: list[Job]) -> None:
        if not runnable:
            return
        size = config.batch_size or 1
        for i in range(0, len(runnable), size):
            self._spawn(config, runnable[i : i + size])

    def _spawn(self, config: QueueConfig, jobs: list[Job], error: Exception | None = None) -> None:
        """Start a task that calls the handler, or with ``error``, records it without a call."""
        self._count[config.name] += 1
        task = asyncio.create_task(self._call(config, jobs, error))
        for job in jobs:
            self.running[job.id] = Running(job, config, task)

    def _finish(self, config: QueueConfig, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.running.pop(job.id, None)
        self._count[config.name] -= 1
        self._slot_freed[config.name].set()
        self._idle.clear()  # its outcome may have enqueued work in any queue
        self._finished_calls += 1
        self._activity.set()
        self._activity = asyncio.Event()
        if self._alone is not None or self._drain_for is not None:
            if any(job.id == self._alone for job in jobs):
                self._alone = None
            self._isolation_changed.set()

    async def _call(self, config: QueueConfig, jobs: list[Job], error: Exception | None) -> None:
        """Run one handler call (none when ``error`` is given) and hand its outcomes to the
        settler."""
        errors: BatchErrors = {}
        result: str | None = None
        started = time.perf_counter()
        span = self._tracing.process(config.name, jobs)  # the settler ends it
        try:
            if error is None:
                with span.current():  # the handler's own spans nest under it
                    errors, result = await call_handler(
                        config,
                        jobs,
                        timeout_s=call_timeout_s(jobs, config),
                        progress=self._report_progress,
                    )
        except asyncio.CancelledError:
            # Lease lost, cancelled, or shutdown: someone else settles (or releases) these jobs
            # (a cancelled job is settled already, in the store).
            span.end()
            self._finish(config, jobs)
            raise
        except HandlerProcessDied as exc:
            span.end()
            self._abandon(config, jobs, exc)
            return
        except Exception as exc:
            error = exc
        self._finish(config, jobs)
        duration = time.perf_counter() - started
        # No await between _finish() and record(): a burst lane that finds its queue idle and
        # waits for the settler to drain waits for these outcomes too.
        if error is not None or errors or len(jobs) > 1:
            self._settler.record(
                [
                    Finished(
                        job,
                        config,
                        error if error is not None else errors.get(job.id),
                        duration,
                        span=span,
                    )
                    for job in jobs
                ]
            )
        else:
            self._settler.record([Finished(jobs[0], config, None, duration, result, span)])

    def _abandon(self, config: QueueConfig, jobs: list[Job], exc: HandlerProcessDied) -> None:
        """The process running the handler died: leave the jobs unsettled, as a dead worker
        would. Their leases are no longer renewed; once expired, they come back counted as a
        crash (no attempt spent) and run alone."""
        self._finish(config, jobs)
        log.error(
            "%s; job%s %s will run again once %s lease expires (in at most %gs)",
            exc,
            "s" if len(jobs) > 1 else "",
            ", ".join(str(job.id) for job in jobs),
            "their" if len(jobs) > 1 else "its",
            config.lease_s,
            extra={"job_id": jobs[0].id, "queue": config.name},
        )

    async def _report_progress(self, job: Job, pct: float, message: str | None) -> None:
        log_progress(job.id, pct, message)
        await self._backend.progress(job.lease, pct=pct, message=message)


async def _first(*awaitables: Awaitable[object]) -> int:
    """Wait until the first of ``awaitables`` ends (raising its error) and return its index;
    end the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([t for t in tasks if not t.done()])
    first = next(i for i, task in enumerate(tasks) if task.done() and not task.cancelled())
    tasks[first].result()
    return first


def _log_leases(jobs: Sequence[Job], worker_id: str) -> None:
    """One DEBUG line per job leased: with the outcome lines, a job's life reads from the log."""
    for job in jobs:
        log.debug(
            "job %s leased by worker %s, attempt %d, delivery %d",
            job.id,
            worker_id,
            job.attempt,
            job.deliveries,
            extra={
                "job_id": job.id,
                "queue": job.queue,
                "attempt": job.attempt,
                "deliveries": job.deliveries,
                "state": "running",
                "worker_id": worker_id,
            },
        )
