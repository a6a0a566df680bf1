"""The worker: leases jobs, runs handlers, settles outcomes, keeps leases alive, shuts down cleanly.

Per worker process:

* one **lane** per queue leases up to its free concurrency in one call and starts one task per
  job (or per batch);
* the **settler** collects outcomes and writes them in batches (complete / retry / dead / defer in
  one group commit); at most one flush is in flight, so outcomes that arrive meanwhile share the
  next one;
* named background loops: **heartbeat** (extends the leases of running jobs every ``lease_s/3``
  and cancels a handler whose lease was lost), **reclaimer** (requeues jobs whose lease expired:
  their worker died), **pruner** (deletes finished jobs past their retention).

Policy lives here, not in backends: outcome classification (DESIGN §3.4), backoff, the crash-loop
limit (``deliveries > max_deliveries`` at lease time), crash isolation (a job that was running
when a worker died runs alone until it finishes once: :mod:`forebay.isolation`) and
``on_exhausted``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from forebay.backends.base import Backend, PruneSpec
from forebay.cancel import cancel_and_wait
from forebay.errors import BackendError, Defer, PermanentError
from forebay.isolation import Admission, HandlerProcessDied, admit
from forebay.job import Deferral, Failure, Job, Lease, Retry, progress_reporter
from forebay.observer import Observer, Outcome, notify_settled
from forebay.queue_config import QueueConfig

__all__ = ["Worker", "WorkerSettings"]

log = logging.getLogger("forebay.worker")

_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker process runs (per-queue policy lives in QueueConfig)."""

    burst: bool = False
    """Process until no job is due and none is running, then return (for scripts and tests)."""
    shutdown_grace_s: float = 30.0
    idle_poll_s: float = 1.0
    """Longest wait for work before leasing again (catches scheduled jobs coming due)."""
    reclaim_every_s: float = 1.0
    prune_every_s: float = 60.0
    completed_retention: timedelta = timedelta(hours=1)
    dead_retention: timedelta = timedelta(days=7)
    cancelled_retention: timedelta = timedelta(days=1)
    handle_signals: bool = True
    worker_id: str | None = None


@dataclass(slots=True)
class _Outcome:
    job: Job
    config: QueueConfig
    error: BaseException | None = None
    duration_s: float = 0.0


class _Settler:
    """Batches outcomes into backend transitions; one flush in flight at a time."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._pending: list[_Outcome] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="forebay-settler")

    def add(self, outcome: _Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._wakeup.set()

    async def drained(self) -> None:
        """Wait until every outcome added so far is committed."""
        await self._idle.wait()

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._pending = self._pending, []
            try:
                await self._worker._settle(batch)
            except BackendError as exc:
                log.error(
                    "could not record %d job outcomes (%s); they will be redelivered",
                    len(batch),
                    exc,
                )
            except Exception:
                # The jobs stay running; their leases expire and they run again (at-least-once).
                log.exception(
                    "could not record %d job outcomes; they will be redelivered", len(batch)
                )


class Worker:
    """Runs the handlers of an app's queues. Usually made by :meth:`forebay.Forebay.worker`."""

    def __init__(
        self,
        backend: Backend,
        queues: Sequence[QueueConfig],
        settings: WorkerSettings | None = None,
        *,
        observers: Sequence[Observer] = (),
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue with a handler")
        self.backend = backend
        self.queues = {q.name: q for q in queues}
        self.settings = settings or WorkerSettings()
        self.observers = list(observers)
        self.worker_id = self.settings.worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        self._running: dict[int, tuple[Job, QueueConfig, asyncio.Task[Any]]] = {}
        self._lane_running: dict[str, int] = dict.fromkeys(self.queues, 0)
        self._slot_freed: dict[str, asyncio.Event] = {}
        self._stopping: asyncio.Event | None = None
        self._last_heartbeat: float | None = None
        self._settler: _Settler | None = None
        self._loops: list[asyncio.Task[None]] = []
        # Crash isolation (see forebay.isolation): the suspect running alone, the queue whose
        # suspect waits for this process to drain, and a signal when either may have changed.
        self._alone: int | None = None
        self._drain_for: str | None = None
        self._isolation_changed = asyncio.Event()
        self.processed = 0
        """Jobs whose outcome was recorded by this worker (any outcome)."""

    @property
    def last_heartbeat(self) -> float | None:
        """``time.monotonic()`` when the heartbeat loop last renewed leases (None: not yet)."""
        return self._last_heartbeat

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop leasing; running jobs get ``shutdown_grace_s`` to finish. Safe to call twice."""
        if self._stopping is not None and not self._stopping.is_set():
            log.info("worker %s stopping: no new leases", self.worker_id)
            self._stopping.set()

    async def run(self) -> None:
        """Work until stopped (SIGTERM/SIGINT, :meth:`stop`) or, in burst mode, until idle."""
        self._stopping = asyncio.Event()
        self._slot_freed = {name: asyncio.Event() for name in self.queues}
        self._settler = _Settler(self)
        await self.backend.open()
        loop = asyncio.get_running_loop()
        signals = self._install_signals(loop)
        self._settler.start()
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="forebay-heartbeat"),
            asyncio.create_task(self._reclaim_loop(), name="forebay-reclaimer"),
            asyncio.create_task(self._prune_loop(), name="forebay-pruner"),
        ]
        log.info("worker %s started on queues %s", self.worker_id, ", ".join(self.queues))
        lanes = [
            asyncio.create_task(self._lane(q), name=f"forebay-lane-{q.name}")
            for q in self.queues.values()
        ]
        try:
            await asyncio.gather(*lanes)
        finally:
            await cancel_and_wait(lanes)
            await self._shutdown()
            for sig in signals:
                loop.remove_signal_handler(sig)
        log.info("worker %s stopped after %d jobs", self.worker_id, self.processed)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        if not self.settings.handle_signals:
            return []
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    async def _shutdown(self) -> None:
        assert self._settler is not None
        tasks = [task for _, _, task in self._running.values()]
        if tasks:
            log.info(
                "waiting up to %ss for %d running jobs", self.settings.shutdown_grace_s, len(tasks)
            )
            _, still = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
            if still:
                unfinished = [job for job, _, task in self._running.values() if task in still]
                await cancel_and_wait(still)
                await self._settler.drained()
                # Released jobs go back to queued without spending an attempt.
                refused = set(await self.backend.release([job.lease for job in unfinished]))
                for job in unfinished:
                    if job.id not in refused:
                        notify_settled(self.observers, job, "released", 0.0)
                log.info("released %d unfinished jobs back to their queues", len(unfinished))
        await self._settler.close()
        await cancel_and_wait(self._loops)
        self._loops = []

    # -- leasing ---------------------------------------------------------------------------
    async def _lane(self, config: QueueConfig) -> None:
        """Lease and start jobs of one queue until stopping (or, in burst mode, until idle).

        A backend outage does not end the lane: it waits (backing off, up to 5 s) and leases
        again, so a worker rides out a database or Redis restart of any length.
        """
        assert self._stopping is not None
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
        assert self._settler is not None
        if self._isolation_blocks(config.name):
            self._isolation_changed.clear()  # no await since the check: no change is missed
            await self._until(self._isolation_changed.wait())
            return False
        freed = self._slot_freed[config.name]
        free = config.concurrency - self._lane_running[config.name]
        if free <= 0:
            freed.clear()
            await self._until(freed.wait())
            await asyncio.sleep(0)  # let sibling completions land: lease in bigger batches
            return False
        jobs = await self.backend.lease(
            queue=config.name,
            limit=free * (config.batch_size or 1),
            worker_id=self.worker_id,
            lease_s=config.lease_s,
        )
        if jobs:
            await self._admit(config, jobs)
            return False
        if self.settings.burst:
            if self._lane_running[config.name] == 0:
                await self._settler.drained()
                return not await self._has_due(config)
            freed.clear()
            await self._until(freed.wait())
            return False
        await self._until(
            self.backend.wait_for_work([config.name], timeout_s=self.settings.idle_poll_s)
        )
        return False

    async def _has_due(self, config: QueueConfig) -> bool:
        """In burst mode: is anything still due (e.g. a retry with no backoff)?"""
        jobs = await self.backend.lease(
            queue=config.name,
            limit=1,
            worker_id=self.worker_id,
            lease_s=config.lease_s,
        )
        if jobs:
            await self._admit(config, jobs)
        return bool(jobs)

    async def _until(self, awaitable: Awaitable[Any]) -> None:
        """Await ``awaitable`` unless the worker starts stopping first."""
        assert self._stopping is not None
        waiter = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([waiter, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            stopped = not waiter.done()
            if stopped:  # end what it was waiting on before going on
                await cancel_and_wait([waiter])
        if not stopped and not waiter.cancelled() and waiter.exception() is not None:
            raise waiter.exception()  # type: ignore[misc]

    def _isolation_blocks(self, queue: str) -> bool:
        """May this lane not lease now? Not while a suspect runs alone; not while a suspect
        waits for the process to drain, except its own lane once nothing runs."""
        if self._alone is not None:
            return True
        if self._drain_for is None:
            return False
        return self._drain_for != queue or self._busy()

    def _busy(self) -> bool:
        return any(self._lane_running.values())

    async def _admit(self, config: QueueConfig, jobs: list[Job]) -> None:
        """Start the leased jobs that may run now; give back those that may not (yet)."""
        runnable = self._crash_loops(config, jobs)
        if self._alone is not None:
            # Another lane's suspect started while this lease was in flight: it runs alone.
            decision, release = Admission(), runnable
        else:
            decision = admit(runnable, others_running=self._busy())
            release = decision.release
            if self._drain_for == config.name or decision.drain:
                self._drain_for = config.name if decision.drain else None
            if decision.alone is not None:
                self._alone = decision.alone.id  # before any await: other lanes hold off now
        if release:
            # Given back unrun (attempt and delivery returned) before the suspect starts: it may
            # kill this process at once. (Should this call fail, the jobs' leases expire and
            # they come back, counted as part of a crash.)
            try:
                await self.backend.release([job.lease for job in release])
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

    def _crash_loops(self, config: QueueConfig, jobs: list[Job]) -> list[Job]:
        """Dead-letter the jobs leased more often than ``max_deliveries``; return the rest."""
        assert self._settler is not None
        limit = config.delivery_limit
        runnable = []
        for job in jobs:
            if job.deliveries > limit:
                # Crash loop: it was leased more often than it ever finished.
                err = PermanentError(
                    f"delivered {job.deliveries} times without finishing "
                    f"(max_deliveries={limit}): its worker keeps dying"
                )
                self._settler.add(_Outcome(job, config, _CrashLoop(err)))
                continue
            runnable.append(job)
        return runnable

    def _start(self, config: QueueConfig, runnable: list[Job]) -> None:
        if not runnable:
            return
        if config.batch_size:
            for i in range(0, len(runnable), config.batch_size):
                self._spawn(config, runnable[i : i + config.batch_size])
        else:
            for job in runnable:
                self._spawn(config, [job])

    def _spawn(self, config: QueueConfig, jobs: list[Job]) -> None:
        self._lane_running[config.name] += 1
        coro = (
            self._run_batch(config, jobs) if config.batch_size else self._run_one(config, jobs[0])
        )
        task = asyncio.create_task(coro)
        for job in jobs:
            self._running[job.id] = (job, config, task)

    def _finish(self, config: QueueConfig, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._running.pop(job.id, None)
        self._lane_running[config.name] -= 1
        self._slot_freed[config.name].set()
        if self._alone is not None or self._drain_for is not None:
            if any(job.id == self._alone for job in jobs):
                self._alone = None
            self._isolation_changed.set()

    # -- running ---------------------------------------------------------------------------
    async def _run_one(self, config: QueueConfig, job: Job) -> None:
        assert self._settler is not None
        error: BaseException | None = None
        started = time.perf_counter()
        progress_reporter.set(self._report_progress)  # this task's own context
        try:
            async with asyncio.timeout(config.timeout_s):
                if config.is_async:
                    await config.handler(job)  # type: ignore[misc,arg-type]
                else:
                    await asyncio.to_thread(config.handler, job)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            # Lease lost or shutdown: someone else settles (or releases) this job.
            self._finish(config, [job])
            raise
        except HandlerProcessDied as exc:
            self._abandon(config, [job], exc)
            return
        except TimeoutError:
            error = TimeoutError(f"handler ran longer than timeout_s={config.timeout_s:g}")
        except Exception as exc:
            error = exc
        self._finish(config, [job])
        self._settler.add(_Outcome(job, config, error, time.perf_counter() - started))

    async def _run_batch(self, config: QueueConfig, jobs: list[Job]) -> None:
        assert self._settler is not None
        results: Mapping[int, BaseException | None] = {}
        error: BaseException | None = None
        started = time.perf_counter()
        progress_reporter.set(self._report_progress)
        try:
            async with asyncio.timeout(config.timeout_s):
                if config.is_async:
                    returned = await config.handler(jobs)  # type: ignore[misc,arg-type]
                else:
                    returned = await asyncio.to_thread(config.handler, jobs)  # type: ignore[arg-type]
            results = returned or {}
        except asyncio.CancelledError:
            self._finish(config, jobs)
            raise
        except HandlerProcessDied as exc:
            self._abandon(config, jobs, exc)
            return
        except TimeoutError:
            error = TimeoutError(f"batch handler ran longer than timeout_s={config.timeout_s:g}")
        except Exception as exc:
            error = exc
        self._finish(config, jobs)
        duration = time.perf_counter() - started
        for job in jobs:
            outcome = error if error is not None else results.get(job.id)
            self._settler.add(_Outcome(job, config, outcome, duration))

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
        await self.backend.progress(job.lease, pct=pct, message=message)

    # -- settling --------------------------------------------------------------------------
    async def _settle(self, outcomes: list[_Outcome]) -> None:
        now = time.time()
        completes: list[Lease] = []
        retries: list[Retry] = []
        failures: list[Failure] = []
        deferrals: list[Deferral] = []
        dead: list[_Outcome] = []
        for o in outcomes:
            kind = _classify(o)
            if kind == "complete":
                completes.append(o.job.lease)
            elif kind == "defer":
                assert isinstance(o.error, Defer)
                deferrals.append(Deferral(o.job.lease, now + o.error.delay_s, o.error.reason))
            elif kind == "retry":
                delay = o.config.backoff.delay_s(o.job.attempt)
                retries.append(Retry(o.job.lease, now + delay, *_describe(o.error)))
            else:
                failures.append(Failure(o.job.lease, *_describe(o.error)))
                dead.append(o)
        results = await asyncio.gather(
            self.backend.complete(completes) if completes else _none(),
            self.backend.retry(retries) if retries else _none(),
            self.backend.dead_letter(failures) if failures else _none(),
            self.backend.defer(deferrals) if deferrals else _none(),
            return_exceptions=True,  # one transition failing leaves the others recorded
        )
        kinds = (
            [lz.job_id for lz in completes],
            [r.lease.job_id for r in retries],
            [f.lease.job_id for f in failures],
            [d.lease.job_id for d in deferrals],
        )
        refused = _refused(kinds, results)
        self.processed += len(outcomes) - len(refused)
        if log.isEnabledFor(logging.INFO):
            _log_outcomes(outcomes, refused)
        if self.observers:
            for o in outcomes:
                if o.job.id not in refused:
                    notify_settled(self.observers, o.job, _PAST[_classify(o)], o.duration_s)
        for o in dead:
            if o.job.id not in refused:
                await self._exhausted(o)

    async def _exhausted(self, o: _Outcome) -> None:
        hook = o.config.on_exhausted
        if hook is None:
            return
        try:
            await hook(o.job, _unwrap(o.error))
        except Exception:
            log.exception(
                "on_exhausted hook of queue %s failed for job %s", o.config.name, o.job.id
            )

    # -- background loops ----------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = min(q.lease_s for q in self.queues.values()) / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
                self._last_heartbeat = time.monotonic()
            except BackendError as exc:  # the store's own words say it all: no traceback
                log.warning("heartbeat failed (%s); will try again in %.1fs", exc, interval)
            except Exception:
                log.exception("heartbeat failed; will try again in %.1fs", interval)

    async def _heartbeat(self) -> None:
        by_queue: dict[str, list[Lease]] = {}
        for job, config, _task in list(self._running.values()):
            by_queue.setdefault(config.name, []).append(job.lease)
        for name, leases in by_queue.items():
            lost = await self.backend.extend(leases, lease_s=self.queues[name].lease_s)
            for job_id in lost:
                entry = self._running.get(job_id)
                if entry is not None:
                    log.warning("lease of job %s was lost; cancelling its handler", job_id)
                    entry[2].cancel()

    async def _reclaim_loop(self) -> None:
        while True:
            try:
                n = await self.backend.reclaim_expired()
                if n:
                    log.warning("requeued %d jobs whose worker stopped heartbeating", n)
                    for event in self._slot_freed.values():
                        event.set()
            except BackendError as exc:
                log.warning("reclaiming expired leases failed: %s", exc)
            except Exception:
                log.exception("reclaiming expired leases failed")
            await asyncio.sleep(self.settings.reclaim_every_s)

    async def _prune_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.prune_every_s)
            try:
                await self.prune_once()
            except BackendError as exc:
                log.warning("pruning finished jobs failed: %s", exc)
            except Exception:
                log.exception("pruning finished jobs failed")

    async def prune_once(self) -> int:
        """Delete finished jobs past their retention, in bounded batches; return how many."""
        s = self.settings
        now = time.time()
        spec = PruneSpec(
            completed_before=now - s.completed_retention.total_seconds(),
            dead_before=now - s.dead_retention.total_seconds(),
            cancelled_before=now - s.cancelled_retention.total_seconds(),
        )
        total = 0
        while True:
            n = await self.backend.prune(spec)
            total += n
            if n < spec.limit:
                return total


_PAST: dict[str, Outcome] = {
    "complete": "completed",
    "defer": "deferred",
    "retry": "retried",
    "dead": "dead",
}


class _CrashLoop(PermanentError):
    def __init__(self, inner: PermanentError) -> None:
        super().__init__(str(inner))


def _classify(o: _Outcome) -> str:
    err = o.error
    if err is None:
        return "complete"
    if isinstance(err, Defer):
        if o.job.defers < o.config.max_defers:
            return "defer"
        o.error = RuntimeError(f"deferred {o.job.defers} times (max_defers): {err.reason}")
        err = o.error
    if isinstance(err, PermanentError):
        return "dead"
    return "retry" if o.job.attempt < o.config.max_attempts else "dead"


def _refused(kinds: Sequence[list[int]], results: Sequence[list[int] | BaseException]) -> set[int]:
    """The ids whose outcome was not recorded: refused (lease lost), or whose transition
    failed (they keep running until their lease expires, then run again: at-least-once)."""
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
    if lost:
        log.warning("lease lost before settling jobs %s; another worker owns them", sorted(lost))
    return refused | lost


def _describe(err: BaseException | None) -> tuple[str, str]:
    if isinstance(err, _CrashLoop):
        return str(err)[:_MAX_ERROR_CHARS], "CrashLoop"
    name = type(err).__name__ if err is not None else "Error"
    text = f"{name}: {err}" if str(err) else name
    return text[:_MAX_ERROR_CHARS], name


def _unwrap(err: BaseException | None) -> BaseException:
    return err if err is not None else RuntimeError("unknown error")


def _log_outcomes(outcomes: list[_Outcome], refused: set[int]) -> None:
    for o in outcomes:
        if o.job.id in refused:
            continue
        kind = _classify(o)
        level = logging.DEBUG if kind == "complete" else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "job %s %s",
                o.job.id,
                {"complete": "completed", "defer": "deferred", "retry": "retrying", "dead": "dead"}[
                    kind
                ],
                extra={
                    "job_id": o.job.id,
                    "queue": o.job.queue,
                    "attempt": o.job.attempt,
                    "outcome": kind,
                    "error": None if o.error is None else _describe(o.error)[0],
                },
            )


async def _none() -> list[int]:
    return []
