"""How one worker process runs: :class:`WorkerSettings` (per-queue policy is in
:class:`~forebay.queue_config.QueueConfig`), and where they come from.

Every field can be set by a ``FOREBAY_*`` environment variable, read by :meth:`from_env`
(:func:`forebay.settings.from_env`: ``FOREBAY_SHUTDOWN_GRACE_S=10``,
``FOREBAY_COMPLETED_RETENTION=3600`` in seconds, ``FOREBAY_BURST=true``); flags given to
``forebay worker`` and ``forebay serve`` win over the variables. A bad value is a
:class:`~forebay.errors.ConfigError` naming the variable or setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta

from forebay.errors import ConfigError
from forebay.settings import from_env

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
    registry_every_s: float = 5.0
    """How often the worker saves its record in the store (:mod:`forebay.worker.registry`);
    the record holds ``max(3 × registry_every_s, 15)`` seconds past each save."""
    completed_retention: timedelta = timedelta(hours=1)
    """How long finished jobs are kept, for queues that set no retention of their own."""
    dead_retention: timedelta = timedelta(days=7)
    cancelled_retention: timedelta = timedelta(days=1)
    handle_signals: bool = True
    worker_id: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            seconds = value.total_seconds() if isinstance(value, timedelta) else value
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                continue
            if not math.isfinite(seconds) or seconds < 0:
                raise ConfigError(f"{f.name} must be a finite, non-negative duration")
            positive = f.name in (
                "idle_poll_s",
                "reclaim_every_s",
                "prune_every_s",
                "registry_every_s",
            )
            if positive and seconds == 0:
                raise ConfigError(f"{f.name} must be above 0 seconds")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        given: Mapping[str, object] | None = None,
    ) -> WorkerSettings:
        """Settings from ``FOREBAY_*`` variables (default: this process's environment), then
        from ``given`` (flags; None: not given)."""
        return from_env(cls, env, given=given)
