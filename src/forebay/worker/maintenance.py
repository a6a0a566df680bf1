"""The worker's maintenance loops, each a named background task (:mod:`forebay.lifecycle`):

* **heartbeat** (``forebay-heartbeat``): every ``lease_s / 3`` (the shortest of the worker's
  queues), extends the leases of the running jobs and cancels a handler whose lease was lost;
  a lease refused because an operator cancelled the job stops its handler as a cancel
  (:meth:`~forebay.worker.lanes.Lanes.stop_cancelled`): that is how a cancel reaches the worker
  on whatever host runs the job, within one heartbeat;
* **reclaimer** (``forebay-reclaimer``): every ``reclaim_every_s``, requeues jobs whose lease
  expired (their worker died) and wakes the lanes to lease them;
* **pruner** (``forebay-pruner``): every ``prune_every_s``, deletes finished jobs past their
  retention (:func:`prune_once`): each queue that sets its own retention by itself, every other
  queue by the worker's; completed runs past the worker's completed retention; and the
  per-minute throughput counts older than :data:`~forebay.fleet.THROUGHPUT_KEPT_S`.

A failing round is logged and the loop goes on: a store outage pauses maintenance, never ends
it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from forebay.backends.base import Backend, PruneSpec
from forebay.errors import BackendError
from forebay.fleet import THROUGHPUT_KEPT_S
from forebay.job import JobState
from forebay.lifecycle import BackgroundTask
from forebay.queue_config import QueueConfig
from forebay.worker.lanes import Lanes
from forebay.worker.settings import WorkerSettings

__all__ = ["Maintenance", "prune_once"]

log = logging.getLogger("forebay.worker")


class Maintenance:
    """The heartbeat, reclaimer and pruner of one worker's lanes."""

    def __init__(
        self,
        backend: Backend,
        queues: Sequence[QueueConfig],
        settings: WorkerSettings,
        lanes: Lanes,
    ) -> None:
        self._backend = backend
        self._queues = list(queues)
        self._lease_s = {q.name: q.lease_s for q in queues}
        self._settings = settings
        self._lanes = lanes
        self.last_heartbeat: float | None = None
        """``time.monotonic()`` when the heartbeat last renewed leases (None: not yet)."""
        self._loops = [
            BackgroundTask("forebay-heartbeat", self._heartbeat_loop),
            BackgroundTask("forebay-reclaimer", self._reclaim_loop),
            BackgroundTask("forebay-pruner", self._prune_loop),
        ]

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    async def stop(self) -> None:
        for loop in self._loops:
            await loop.stop()

    async def _heartbeat_loop(self) -> None:
        interval = min(self._lease_s.values()) / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
                self.last_heartbeat = time.monotonic()
            except BackendError as exc:  # the store's own words say it all: no traceback
                log.warning("heartbeat failed (%s); will try again in %.1fs", exc, interval)
            except Exception:
                log.exception("heartbeat failed; will try again in %.1fs", interval)

    async def _heartbeat(self) -> None:
        for name, leases in self._lanes.leases().items():
            lost = await self._backend.extend(leases, lease_s=self._lease_s[name])
            for job_id in lost:
                # Rare (a lost lease or a cancel): one read says which.
                job = await self._backend.get_job(job_id)
                if job is not None and job.state is JobState.CANCELLED:
                    self._lanes.stop_cancelled(job_id)
                else:
                    self._lanes.cancel(job_id)

    async def _reclaim_loop(self) -> None:
        while True:
            try:
                n = await self._backend.reclaim_expired()
                if n:
                    log.warning("requeued %d jobs whose worker stopped heartbeating", n)
                    self._lanes.wake()
            except BackendError as exc:
                log.warning("reclaiming expired leases failed: %s", exc)
            except Exception:
                log.exception("reclaiming expired leases failed")
            await asyncio.sleep(self._settings.reclaim_every_s)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.prune_every_s)
            try:
                await prune_once(self._backend, self._settings, self._queues)
            except BackendError as exc:
                log.warning("pruning finished jobs failed: %s", exc)
            except Exception:
                log.exception("pruning finished jobs failed")


async def prune_once(
    backend: Backend, settings: WorkerSettings, queues: Sequence[QueueConfig] = ()
) -> int:
    """Delete finished jobs, and completed runs, past their retention, in bounded batches;
    return how many.

    A queue of ``queues`` that sets a retention of its own is pruned apart, by its own (the
    worker's for a state it leaves unset); every other queue by the worker's.
    """
    now = time.time()
    own = [q for q in queues if any(v is not None for v in q.retention.values())]
    general = _spec(settings, now)
    specs = [
        # Runs go with the completed jobs' retention: a completed run is kept as long as
        # its completed jobs are.
        replace(
            general,
            other_than=tuple(q.name for q in own),
            runs_before=general.completed_before,
            throughput_before=now - THROUGHPUT_KEPT_S,  # every queue's minutes, once
        ),
        *(replace(_spec(settings, now, q), queue=q.name) for q in own),
    ]
    total = 0
    for spec in specs:
        while True:
            n = await backend.prune(spec)
            total += n
            if n < spec.limit:
                break
    return total


def _spec(settings: WorkerSettings, now: float, queue: QueueConfig | None = None) -> PruneSpec:
    """The cut-offs of ``queue``'s retention (None, or a state it leaves unset: the worker's)."""

    def before(own: timedelta | None, default: timedelta) -> float:
        return now - (default if own is None else own).total_seconds()

    own = {} if queue is None else queue.retention
    return PruneSpec(
        completed_before=before(own.get("completed_retention"), settings.completed_retention),
        dead_before=before(own.get("dead_retention"), settings.dead_retention),
        cancelled_before=before(own.get("cancelled_retention"), settings.cancelled_retention),
    )
