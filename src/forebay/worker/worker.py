"""The worker: puts its lanes, settler and maintenance loops together, and shuts down cleanly.

:meth:`Worker.run` opens the backend, stores the flow limits its queues declare (so the job store
enforces them from this worker's first lease on), starts the maintenance loops (:mod:`.maintenance`)
and the scheduler (:mod:`.scheduler`), runs the lanes (:mod:`.lanes`) until stopped —
SIGTERM/SIGINT, :meth:`Worker.stop`, or in burst mode an idle store — and keeps its record in the
store (:mod:`.registry`) from start to stop. Then it shuts down (DESIGN §3.8):
no new leases, running jobs get ``shutdown_grace_s`` to finish, the rest are released back to
``queued`` without spending an attempt, every outcome is written (:mod:`.settler`), their hooks
finish (:mod:`.hooks`), and the loops stop. A second signal during the grace (or
:meth:`Worker.stop_now`) ends the grace at once: the running jobs are released then, to run again
elsewhere straight away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Sequence

from forebay.backends.base import Backend
from forebay.cancel import cancel_and_wait
from forebay.errors import ConfigError
from forebay.flow import NO_LIMITS
from forebay.job import Enqueuer, job_enqueuer
from forebay.observer import Observer, notify_settled
from forebay.outcome import JobOutcome
from forebay.queue_config import QueueConfig
from forebay.schedules import Schedule
from forebay.tracing import Tracing
from forebay.worker.lanes import Lanes
from forebay.worker.maintenance import Maintenance, prune_once
from forebay.worker.outcome_logger import OutcomeLogger
from forebay.worker.registry import Registry
from forebay.worker.scheduler import Scheduler
from forebay.worker.settings import WorkerSettings
from forebay.worker.settler import Settler

__all__ = ["Worker"]

log = logging.getLogger("forebay.worker")


class Worker:
    """Runs the handlers of an app's queues. Usually made by :meth:`forebay.Forebay.worker`."""

    def __init__(
        self,
        backend: Backend,
        queues: Sequence[QueueConfig],
        settings: WorkerSettings | None = None,
        *,
        observers: Sequence[Observer] = (),
        schedules: Sequence[Schedule] = (),
        enqueue: Enqueuer | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if not queues:
            raise ConfigError("a worker needs at least one queue with a handler")
        self.backend = backend
        self.queues = {q.name: q for q in queues}
        self.settings = settings or WorkerSettings()
        self.worker_id = self.settings.worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        self.registry = Registry(
            backend, worker_id=self.worker_id, queues=queues, settings=self.settings
        )
        """This worker's record in the store, and the outcome counts it carries."""
        self.observers: list[Observer] = [OutcomeLogger(), self.registry, *observers]
        """Told about every recorded outcome; the first one logs it, the next counts it."""
        self._settler = Settler(backend, self.observers)
        self._stopping: asyncio.Event | None = None
        self._stop_now: asyncio.Event | None = None
        self._lanes: Lanes | None = None
        self._maintenance: Maintenance | None = None
        self._enqueue: Enqueuer = enqueue or (lambda jobs: backend.enqueue(jobs))
        """What ``job.enqueue()`` in a handler stores with (the app's ``enqueue_many``)."""
        self._tracing = tracing or Tracing()
        """Makes the span each handler call runs in (default: from the global tracer provider;
        see :mod:`forebay.tracing`)."""
        self.scheduler = Scheduler(backend, schedules)
        """Saves ``schedules`` (the app's) at start, then fires every stored schedule's ticks."""

    @property
    def processed(self) -> int:
        """Jobs whose outcome was recorded by this worker (any outcome)."""
        return self._settler.processed

    @property
    def last_heartbeat(self) -> float | None:
        """``time.monotonic()`` when the heartbeat loop last renewed leases (None: not yet)."""
        return None if self._maintenance is None else self._maintenance.last_heartbeat

    def stop(self) -> None:
        """Stop leasing; running jobs get ``shutdown_grace_s`` to finish. Safe to call twice."""
        if self._stopping is not None and not self._stopping.is_set():
            log.info("worker %s stopping: no new leases", self.worker_id)
            self._stopping.set()

    def stop_now(self) -> None:
        """Stop without waiting out the grace: running jobs are cancelled and released back to
        their queues (no attempt spent), so they run again elsewhere at once. Safe to call
        twice, and before :meth:`stop`."""
        if self._stop_now is None or self._stop_now.is_set():
            return
        self.stop()
        log.warning("worker %s stopping now: releasing its running jobs", self.worker_id)
        self._stop_now.set()

    def _signalled(self) -> None:
        """SIGTERM/SIGINT: the first stops gracefully, the next one stops at once."""
        if self._stopping is not None and self._stopping.is_set():
            self.stop_now()
            return
        log.info(
            "worker %s stopping: finishing running jobs (press Ctrl-C again to stop now)",
            self.worker_id,
        )
        self.stop()

    async def run(self) -> None:
        """Work until stopped (SIGTERM/SIGINT, :meth:`stop`) or, in burst mode, until idle."""
        # Made here, not in __init__: they belong to the event loop that runs the worker.
        self._stopping = asyncio.Event()
        self._stop_now = asyncio.Event()
        job_enqueuer.set(self._enqueue)  # the handlers' tasks are made in this context
        lanes = self._lanes = Lanes(
            self.backend,
            list(self.queues.values()),
            self.settings,
            self._settler,
            worker_id=self.worker_id,
            stopping=self._stopping,
            tracing=self._tracing,
        )
        self._maintenance = Maintenance(
            self.backend, list(self.queues.values()), self.settings, lanes
        )
        await self.backend.open()
        await self.store_limits()
        loop = asyncio.get_running_loop()
        signals = self._install_signals(loop)
        self._maintenance.start()
        await self.registry.start(running=lambda: len(lanes.running))
        self.scheduler.start()
        log.info("worker %s started on queues %s", self.worker_id, ", ".join(self.queues))
        try:
            await lanes.run()
        finally:
            await self._shutdown(lanes, self._maintenance)
            for sig in signals:
                loop.remove_signal_handler(sig)
        log.info("worker %s stopped after %d jobs", self.worker_id, self.processed)

    async def store_limits(self) -> None:
        """Store the flow limits this worker's queues declare (``QueueConfig.limits``) where
        they differ from the stored ones, no limits included: a limit removed from the code is
        lifted when the new code's workers start. (Two deployments that disagree: the last
        worker to start wins, as with schedules.)"""
        stored = {s.queue: s.limits for s in await self.backend.queue_settings()}
        for config in self.queues.values():
            if stored.get(config.name, NO_LIMITS) != config.limits:
                await self.backend.set_queue(config.name, limits=config.limits)
                log.info("queue %s: flow limits stored: %s", config.name, config.limits.describe())

    async def prune_once(self) -> int:
        """Delete finished jobs past their retention, in bounded batches; return how many."""
        return await prune_once(self.backend, self.settings, list(self.queues.values()))

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        if not self.settings.handle_signals:
            return []
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._signalled)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    async def _shutdown(self, lanes: Lanes, maintenance: Maintenance) -> None:
        self.registry.stopping()
        try:
            await self._settle_running(lanes)
        finally:
            # Even when the store failed the release: no heartbeat, pruner or registry save
            # outlives this worker (a supervisor may start another in this process).
            await maintenance.stop()
            await self.registry.stop()  # last: listed as stopping until every job is settled

    async def _settle_running(self, lanes: Lanes) -> None:
        await self.scheduler.stop()  # a stopping worker fires no more ticks
        tasks = {entry.task for entry in lanes.running.values()}
        if tasks:
            log.info(
                "waiting up to %ss for %d running jobs", self.settings.shutdown_grace_s, len(tasks)
            )
            still = await self._grace(tasks)
            if still:
                unfinished = [e.job for e in lanes.running.values() if e.task in still]
                await cancel_and_wait(still)
                await self._settler.drained()
                # Released jobs go back to queued without spending an attempt.
                refused = set(await self.backend.release([job.lease for job in unfinished]))
                for job in unfinished:
                    if job.id not in refused:
                        notify_settled(self.observers, job, JobOutcome.RELEASED, 0.0)
                log.info("released %d unfinished jobs back to their queues", len(unfinished))
        await self._settler.drained()
        # each bounded by its queue's hook_timeout_s; cut short by stop_now()
        await self._settler.hooks.drained(self._stop_now)

    async def _grace(self, tasks: set[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Wait for ``tasks`` up to the grace, or until :meth:`stop_now`; the unfinished."""
        assert self._stop_now is not None
        finished = asyncio.ensure_future(asyncio.wait(tasks))
        told = asyncio.ensure_future(self._stop_now.wait())
        try:
            await asyncio.wait(
                {finished, told},
                timeout=self.settings.shutdown_grace_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            await cancel_and_wait([finished, told])
        return {t for t in tasks if not t.done()}
