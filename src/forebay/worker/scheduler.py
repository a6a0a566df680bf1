"""The scheduler: fires the stored schedules' due ticks, in every worker process.

A background loop (``forebay-scheduler``, :mod:`forebay.lifecycle`) beside the worker's
maintenance loops. At start it saves the schedules its app declares (a known schedule keeps
its last tick); then, round after round, it reads every stored schedule, asks
:func:`forebay.schedules.due` which ticks are due, and carries that out with one atomic store
step (:meth:`~forebay.backends.base.Backend.fire_schedule`), and sleeps until the next tick of
any schedule (at most ``refresh_s``, so schedules saved elsewhere are picked up).

Why a tick is enqueued once however many processes and hosts run this loop (the hazard is
every scheduler waking at the same tick): the store step is a compare-and-set of the
schedule's last tick *and* the enqueue of the tick's jobs, in one transaction or script. The
first process to fire a tick moves the last tick; the others find it moved and change
nothing. A crash leaves both changes or neither. And the key of a tick's job,
``schedule:<name>:<tick>``, makes even a repeated enqueue store the job once.

A failing round is logged and the loop goes on: a store outage delays ticks, and the first
round after it enqueues at most ``catch_up`` of the missed ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from forebay.backends.base import Backend
from forebay.errors import BackendError, ForebayError
from forebay.job import utcnow
from forebay.lifecycle import BackgroundTask
from forebay.schedules import Schedule, due, firing, next_tick, tick_key

__all__ = ["Scheduler"]

log = logging.getLogger("forebay.scheduler")

_MIN_SLEEP_S = 0.005


class Scheduler:
    """Fires due ticks of the stored schedules; saves ``declared`` ones first."""

    def __init__(
        self,
        backend: Backend,
        declared: Sequence[Schedule] = (),
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._backend = backend
        self._declared = list(declared)
        self._saved = not self._declared
        self._refresh_s = refresh_s
        self._clock = clock
        self._loop = BackgroundTask("forebay-scheduler", self._run)
        self.enqueued = 0
        """Tick jobs this scheduler enqueued (ticks it fired first)."""

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.run_once()
            except BackendError as exc:  # the store's own words say it all: no traceback
                delay = self._refresh_s
                log.warning("firing schedules failed (%s); will try again in %.1fs", exc, delay)
            except Exception:
                delay = self._refresh_s
                log.exception("firing schedules failed; will try again in %.1fs", delay)
            await asyncio.sleep(delay)

    async def run_once(self, now: datetime | None = None) -> float:
        """Fire every due tick once; return the seconds until the next tick of any schedule
        (at most ``refresh_s``)."""
        if not self._saved:
            await self._backend.save_schedules(self._declared)
            self._saved = True
        at = self._clock() if now is None else now
        wake = self._refresh_s
        for schedule in await self._backend.list_schedules():
            try:
                await self._fire(schedule, at)
                upcoming = next_tick(schedule, at)
            except BackendError:
                raise  # the store is down: the whole round waits
            except ForebayError as exc:  # e.g. a timezone this host does not know
                log.error("schedule %s cannot fire: %s", schedule.name, exc)
                continue
            except Exception:  # one broken schedule never stops the others
                log.exception("schedule %s cannot fire", schedule.name)
                continue
            wake = min(wake, (upcoming - at).total_seconds())
        return max(wake, _MIN_SLEEP_S)

    async def _fire(self, schedule: Schedule, now: datetime) -> None:
        verdict = due(schedule, now)
        step = firing(schedule, verdict)
        if step is None or not await self._backend.fire_schedule(step):
            return  # nothing due, or another process fired it first
        self.enqueued += len(step.jobs)
        if schedule.last_tick is None:
            log.info("schedule %s armed: it fires from the tick after %s", schedule.name, now)
        if verdict.skipped:
            log.warning(
                "schedule %s: skipped %d missed tick(s) (catch_up=%d keeps the newest only)",
                schedule.name,
                verdict.skipped,
                schedule.catch_up,
            )
        for tick in verdict.ticks:
            log.info("schedule %s: enqueued %s", schedule.name, tick_key(schedule.name, tick))
