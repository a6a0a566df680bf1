"""An app's workers run under supervision inside a server's event loop (``forebay serve``).

In-process (the default): one named background task, ``forebay-service-worker``, runs a
:class:`~forebay.Worker` for every queue the app handles. If the worker stops with an error
(the backend went away mid-lease), the task starts a fresh one after a capped backoff, so a
backend outage pauses processing instead of ending it. Start and stop are idempotent; stop
lets running jobs finish for ``shutdown_grace_s`` and releases the rest (DESIGN §3.8).

With ``forebay serve --worker-processes N``, :class:`ProcessWorkers` runs that same supervised
worker, but each handler call runs in one of N child processes (:mod:`forebay.execution.pool`),
so handler CPU (parsing, parquet, SQL) uses other cores and never delays the intake's answers.

:class:`WorkerHealth` is what ``/readyz`` reports of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from forebay.app import Forebay
from forebay.execution.pool import HandlerPool
from forebay.lifecycle import BackgroundTask
from forebay.worker import Worker, WorkerSettings

__all__ = ["InProcessWorkers", "ProcessWorkers", "WorkerHealth"]

log = logging.getLogger("forebay.execution")

_RESTART_MIN_S = 0.5
_RESTART_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    running: bool
    fresh: bool
    last_heartbeat_age_s: float
    stale_after_s: float
    queues: list[str]
    restarts: int
    processes: int = 0
    """Worker processes (0: the workers run in the service's own process)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "fresh": self.fresh,
            "last_heartbeat_age_s": round(self.last_heartbeat_age_s, 3),
            "stale_after_s": self.stale_after_s,
            "queues": self.queues,
            "restarts": self.restarts,
            "processes": self.processes,
        }


class InProcessWorkers:
    """Runs (and re-runs after a failure) the app's worker as a task of this event loop."""

    def __init__(
        self,
        app: Forebay,
        *,
        shutdown_grace_s: float,
        retention: Mapping[str, timedelta] | None = None,
    ) -> None:
        self._app = app
        self._settings = WorkerSettings(
            shutdown_grace_s=shutdown_grace_s,
            # The server (uvicorn) owns SIGTERM/SIGINT and stops us through stop().
            handle_signals=False,
            **(retention or {}),  # type: ignore[arg-type]
        )
        self._task = BackgroundTask("forebay-service-worker", self._supervise)
        self._started = False
        self._closing: asyncio.Event | None = None
        self.worker: Worker | None = None
        self._started_at = 0.0
        self._restarts = 0

    @property
    def queues(self) -> list[str]:
        return sorted(n for n, q in self._app.queues.items() if q.handler is not None)

    def start(self) -> None:
        """Start the supervised worker (once; later calls do nothing)."""
        if self._started or not self.queues:
            return
        self._started = True
        self._closing = asyncio.Event()
        self._task.start()

    async def stop(self) -> None:
        """Stop leasing, let running jobs finish (up to the grace), then return."""
        if self._closing is None:
            return
        self._closing.set()
        if self.worker is not None:
            self.worker.stop()
        await self._task.join()

    def stop_now(self) -> None:
        """End the grace of a stop at once: running jobs are released to run elsewhere."""
        if self._closing is not None:
            self._closing.set()
        if self.worker is not None:
            self.worker.stop_now()

    def _make_worker(self) -> Worker:
        return self._app.worker(settings=self._settings)

    async def _supervise(self) -> None:
        assert self._closing is not None
        delay = _RESTART_MIN_S
        while not self._closing.is_set():
            # No await between the check above and run() setting up its stop event, so a
            # stop() that lands in between is never missed.
            self.worker = self._make_worker()
            self._started_at = time.monotonic()
            try:
                await self.worker.run()
                return
            except Exception:
                log.exception("in-process worker failed; starting a new one in %.1fs", delay)
            self._restarts += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            delay = min(_RESTART_MAX_S, delay * 2)

    def health(self) -> WorkerHealth | None:
        """None when this service runs no workers (after stop(): not running)."""
        if not self._started:
            return None
        worker = self.worker
        lease_s = min((q.lease_s for q in worker.queues.values()), default=30.0) if worker else 30.0
        beat = worker.last_heartbeat if worker is not None else None
        age = time.monotonic() - (beat if beat is not None else self._started_at)
        # Leases are renewed every lease_s / 3: after a whole lease_s without a renewal,
        # running jobs are about to be handed to other workers.
        return WorkerHealth(
            running=self._task.running,
            fresh=age <= lease_s,
            last_heartbeat_age_s=age,
            stale_after_s=lease_s,
            queues=self.queues,
            restarts=self._restarts,
        )


class ProcessWorkers(InProcessWorkers):
    """The in-process worker, with every handler call run in one of N child processes.

    Leasing, heartbeats and settling stay in the service's process, so the job store has one
    writer (SQLite group-commits the intake's and the worker's writes together); the handlers'
    CPU (parsing, parquet, SQL drivers) runs on other cores and never delays an answer. Each
    child imports the app again (``MODULE:ATTR``, same folder and environment) and keeps it, so
    a handler's sinks and connections live as long as the child (see
    :class:`~forebay.execution.pool.HandlerPool`); stopping waits for running calls
    (``shutdown_grace_s``), then ends the children.
    """

    def __init__(
        self,
        app: Forebay,
        app_ref: str,
        *,
        processes: int,
        shutdown_grace_s: float,
        retention: Mapping[str, timedelta] | None = None,
        url: str | None = None,
        log_level: str = "info",
        log_format: str = "text",
    ) -> None:
        super().__init__(app, shutdown_grace_s=shutdown_grace_s, retention=retention)
        self.pool = HandlerPool(
            app_ref,
            processes=processes,
            url=url,
            log_level=log_level,
            log_format=log_format,
        )

    def start(self) -> None:
        if self._started or not self.queues:
            return
        self.pool.start()
        super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.pool.stop()

    def _make_worker(self) -> Worker:
        return self.pool.worker(self._app, None, self._settings)

    def health(self) -> WorkerHealth | None:
        """The worker's heartbeat, and every handler process alive."""
        health = super().health()
        if health is None:
            return None
        return replace(
            health,
            running=health.running and self.pool.alive,
            restarts=health.restarts + self.pool.restarts,
            processes=self.pool.processes,
        )
