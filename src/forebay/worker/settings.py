"""How one worker process runs: :class:`WorkerSettings` (per-queue policy is in
:class:`~forebay.queue_config.QueueConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["WorkerSettings"]


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
