"""Waiting for a job to finish: the half every backend shares.

A backend tells the waiters of its own process that jobs may have finished (its engine's
wake-up: PostgreSQL NOTIFY, Redis PUBLISH, or its own settle in this process on SQLite) by
calling :meth:`FinishWaiters.wake`; :func:`wait_finished` is the loop a waiter runs. The order
in it is what makes it safe: the waiter is *watching* before it reads the job, so a job that
finishes between the read and the wait still wakes it, and every wake-up is followed by a read
(a wake-up only says "may have finished": spurious ones cost one read).

Where the engine's wake-up cannot reach this process (another process on SQLite, or while a
listening connection is down), the waiter re-reads every ``poll_s`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator

from forebay.job import Job

__all__ = ["FinishWaiters", "wait_finished"]


class FinishWaiters:
    """The waiters of one backend instance, by job id. Used from its event loop only."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: dict[int, set[asyncio.Event]] = {}

    def __bool__(self) -> bool:
        """Whether anyone waits (the settle paths skip all work when nobody does)."""
        return bool(self._events)

    @contextlib.contextmanager
    def watch(self, job_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever job ``job_id`` may have finished, while the block runs."""
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            watching = self._events.get(job_id)
            if watching is not None:
                watching.discard(event)
                if not watching:
                    del self._events[job_id]

    def wake(self, ids: Iterable[int]) -> None:
        """Jobs ``ids`` may have finished: wake whoever watches them."""
        for job_id in ids:
            for event in self._events.get(job_id, ()):
                event.set()

    def wake_all(self) -> None:
        """Any job may have finished (a wake-up may have been missed): every waiter re-reads."""
        for watching in self._events.values():
            for event in watching:
                event.set()


async def wait_finished(
    job_id: int,
    *,
    timeout_s: float,
    waiters: FinishWaiters,
    read: Callable[[int], Awaitable[Job | None]],
    poll_s: Callable[[], float | None],
    ready: Callable[[], Awaitable[None]] | None = None,
) -> Job | None:
    """Return job ``job_id`` once it is finished (at once if it is), or as it stands when
    ``timeout_s`` (``math.inf``: no limit) has passed; None when there is no such job.

    ``ready``: awaited once, after the waiter watches and before its first read (a backend
    starts listening there). ``poll_s()``: how long a wait may last before reading again
    (None: until woken), asked before every wait since it changes while a listener is down.
    """
    deadline = None if math.isinf(timeout_s) else time.monotonic() + max(0.0, timeout_s)
    with waiters.watch(job_id) as woken:
        if ready is not None:
            await ready()
        while True:
            woken.clear()  # cleared before the read: a wake-up during it is kept
            job = await read(job_id)
            if job is None or job.state.terminal:
                return job
            wait_s = poll_s()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return job
                wait_s = remaining if wait_s is None else min(wait_s, remaining)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await woken.wait()
