"""The worker's record in the job store (:mod:`forebay.fleet`), so every node sees the fleet.

The **registry** (``forebay-registry``, a named background task) saves this worker's
:class:`~forebay.fleet.WorkerInfo` when the worker starts, again every ``registry_every_s``
(its counts and the jobs it runs now), once more with ``stopping=True`` when its shutdown
starts, and removes it when the worker stops cleanly (burst mode included). Each save holds
for ``ttl_s = max(3 × registry_every_s, 15)`` seconds: a worker killed without a goodbye drops
out of every listing once that time has passed, with nothing to clean up.

The counts come from the outcomes the settler recorded: the registry is one of the worker's
observers (``completed``: jobs completed; ``failed``: runs retried or dead-lettered; jobs
released at shutdown and deferred runs count as neither).

A failing save is logged (a warning) and tried again on the next beat: a store outage hides the
worker from listings for a while, never stops it.

Concurrency hazards, and why they are safe: one lock covers every save and the close, so a
save in flight ends before the record is removed and no save starts after (a record removed
and then saved again would stay listed for a ttl after a clean stop); each save is bounded by
the ttl, so a store that hangs cannot hold the worker's shutdown longer than that. The
``stopping`` save is the loop's next beat, woken early: the shutdown does not wait for it, so a
slow store never shortens the running jobs' grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from forebay.backends.base import Backend
from forebay.errors import BackendError
from forebay.fleet import WorkerInfo
from forebay.job import Job, utcnow
from forebay.lifecycle import BackgroundTask
from forebay.outcome import JobOutcome
from forebay.queue_config import QueueConfig
from forebay.worker.settings import WorkerSettings

__all__ = ["STOP_WAIT_S", "Registry", "ttl_for"]

log = logging.getLogger("forebay.worker")

_MIN_TTL_S = 15.0
STOP_WAIT_S = 5.0
"""Longest a stopping worker waits for a save in flight, and then for its record's removal."""


def ttl_for(registry_every_s: float) -> float:
    """How long a worker's record holds past each save: three beats, at least 15 seconds."""
    return max(3 * registry_every_s, _MIN_TTL_S)


def _version() -> str:
    from forebay import __version__  # the package root imports the worker: read it late

    return __version__


class Registry:
    """Keeps one worker's record in the store; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        worker_id: str,
        queues: Sequence[QueueConfig],
        settings: WorkerSettings,
    ) -> None:
        self._backend = backend
        self._every_s = settings.registry_every_s
        now = utcnow()
        self._record = WorkerInfo(
            id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=tuple(q.name for q in queues),
            concurrency=sum(q.concurrency for q in queues),
            version=_version(),
            started_at=now,
            last_seen=now,
            ttl_s=ttl_for(settings.registry_every_s),
        )
        self.completed = 0
        """Jobs this worker completed."""
        self.failed = 0
        """Runs of this worker that were retried or dead-lettered."""
        self.last_saved: float | None = None
        """``time.monotonic()`` of the last save the store took (None: none yet)."""
        self._running: Callable[[], int] = lambda: 0
        self._stopping = False
        self._closed = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop = BackgroundTask("forebay-registry", self._beat_loop)

    # -- the observer: counts what the settler recorded -----------------------------------
    def enqueued(self, jobs: Sequence[Job]) -> None:
        """Enqueues are not the worker's to count."""

    def settled(self, job: Job, outcome: JobOutcome, duration_s: float) -> None:
        if outcome is JobOutcome.COMPLETED:
            self.completed += 1
        elif outcome in (JobOutcome.RETRIED, JobOutcome.DEAD):
            self.failed += 1

    # -- the record -----------------------------------------------------------------------
    def info(self) -> WorkerInfo:
        """The record as the next save stores it."""
        return replace(
            self._record,
            last_seen=utcnow(),
            completed=self.completed,
            failed=self.failed,
            running=self._running(),
            stopping=self._stopping,
        )

    async def start(self, running: Callable[[], int]) -> None:
        """Save the record now (``running``: how many jobs run now), then every beat."""
        self._running = running
        self._record = replace(self._record, started_at=utcnow())
        await self._save()
        self._loop.start()

    def stopping(self) -> None:
        """The worker's shutdown started: the record says so, saved at once by the loop (the
        shutdown does not wait for it: a slow store must not eat into the running jobs'
        grace)."""
        self._stopping = True
        self._wake.set()

    async def stop(self) -> None:
        """Save no more and remove the record (the worker stopped cleanly). Idempotent.

        Bounded by :data:`STOP_WAIT_S` twice (a save in flight, then the removal), so a store
        that hangs adds seconds, not the record's ttl, to a shutdown; a record a hung store
        kept drops out of listings within its ttl."""
        if self._closed:
            return
        self._closed = True  # no save starts after this (checked under the lock)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT_S), self._lock:
                pass  # a save in flight ends first, so it cannot land after the removal
        await self._loop.stop()
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                await self._backend.remove_worker(self._record.id)
        except (BackendError, TimeoutError) as exc:
            log.warning(
                "could not remove worker %s from the store (%s); it drops out of listings "
                "within %.0fs",
                self._record.id,
                exc or "timed out",
                self._record.ttl_s,
            )
        except Exception:
            log.exception(
                "could not remove worker %s from the store; it drops out of listings within %.0fs",
                self._record.id,
                self._record.ttl_s,
            )

    async def _beat_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # a beat, or woken early by stopping()
                async with asyncio.timeout(self._every_s):
                    await self._wake.wait()
            self._wake.clear()
            await self._save()

    async def _save(self) -> None:
        async with self._lock:
            if self._closed:
                return
            try:
                async with asyncio.timeout(self._record.ttl_s):
                    await self._backend.save_worker(self.info())
                self.last_saved = time.monotonic()
            except (BackendError, TimeoutError) as exc:  # the store's words say it all
                log.warning(
                    "saving worker %s in the store failed (%s); will try again in %.1fs",
                    self._record.id,
                    exc or "timed out",
                    self._every_s,
                )
            except Exception:
                log.exception(
                    "saving worker %s in the store failed; will try again in %.1fs",
                    self._record.id,
                    self._every_s,
                )
