"""Wake-ups by LISTEN/NOTIFY: a dedicated connection per channel and backend instance.

Every statement that makes jobs due (enqueue, a retry or release that is due at once, reclaim,
replay) calls ``pg_notify(<schema>, <queue>)``; PostgreSQL delivers it when that transaction
commits, to every listening process on any host. The listener resolves the waiters of that
queue; a notification that finds nobody waiting is remembered, so a worker that was busy
leasing when it came returns from its next wait at once instead of sleeping through it.

When the connection drops (server restart, network), the listener reconnects in the
background with backoff, and meanwhile :meth:`wait` returns after at most ``poll_s``: idle
workers poll until notifications flow again. After every (re)connect all waiters are woken,
since notifications sent while nobody listened are lost.

A second channel announces finished jobs (:class:`FinishListener`): every statement that makes
jobs completed, dead or cancelled sends one notification naming them (``*`` when they are too
many for a notification's 8000 bytes: then every waiter re-reads). Only a process that waits
for a job to finish listens to it; workers never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from forebay.backends.finishes import FinishWaiters
from forebay.backends.postgres.connection import translate
from forebay.cancel import cancel_and_wait

__all__ = ["FinishListener", "Listener"]

log = logging.getLogger("forebay.postgres")

_HEALTH_CHECK_EVERY_S = 15.0
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0


class _Listening:
    """LISTENs on one channel in the background, reconnecting; subclasses handle what comes."""

    waiting_for = "waiters"
    """Who polls while the connection is down (for the log)."""
    task_name = "forebay-pg-listener"

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], channel: str, *, poll_s: float
    ) -> None:
        self._connect = connect
        self.channel = channel
        self.poll_s = poll_s
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Start listening in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def started(self, timeout_s: float) -> None:
        """Start listening and wait (at most ``timeout_s``) until LISTEN is in effect.

        A worker calls this before its first lease, so that no job committed after that lease
        can go unnoticed. If the server does not answer in time, waits fall back to polling.
        """
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()

    async def stop(self) -> None:
        """Stop listening and close the connection (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        self._stopped()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        raise NotImplementedError

    def _reconnected(self) -> None:
        """Notifications may have been missed while nobody listened: wake everyone."""
        raise NotImplementedError

    def _stopped(self) -> None:
        """Nothing will be notified any more: wake whoever waits."""
        raise NotImplementedError

    async def _run(self) -> None:
        delay = _FIRST_BACKOFF_S
        reported = False  # one warning per outage, not one per attempt
        while True:
            try:
                await self._session()  # returns when a working session ends
                log.warning(
                    "LISTEN connection lost; %s poll every %.2fs until it is back",
                    self.waiting_for,
                    self.poll_s,
                )
                delay, reported = _FIRST_BACKOFF_S, True
            except Exception as exc:
                if not reported:
                    log.warning(
                        "cannot LISTEN (%s); %s poll meanwhile", translate(exc), self.waiting_for
                    )
                    reported = True
            finally:
                self._connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _session(self) -> None:
        conn = await self._connect()
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(self.channel, self._on_notify)
            self._connected.set()
            self._reconnected()  # anything may have been missed
            while not lost.is_set():
                try:
                    async with asyncio.timeout(_HEALTH_CHECK_EVERY_S):
                        await lost.wait()
                except TimeoutError:
                    # A silently dropped network connection only shows when used.
                    try:
                        async with asyncio.timeout(_HEALTH_CHECK_EVERY_S):
                            await conn.fetchval("SELECT 1")
                    except Exception:
                        return
        finally:
            conn.terminate()


class Listener(_Listening):
    """LISTENs on the work channel and wakes the waiters of the queue each notification names."""

    waiting_for = "idle workers"

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], channel: str, *, poll_s: float
    ) -> None:
        super().__init__(connect, channel, poll_s=poll_s)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._missed: set[str] = set()
        self._known: set[str] = set()

    async def wait(self, queues: Sequence[str], timeout_s: float) -> None:
        """Return when one of ``queues`` was notified (now or since the last wait), or later
        than ``timeout_s`` (``poll_s`` while not connected)."""
        self.start()
        self._known.update(queues)
        if any(q in self._missed for q in queues):
            self._missed.difference_update(queues)
            return
        if not self.connected:
            timeout_s = min(timeout_s, self.poll_s)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for q in queues:
            self._waiters.setdefault(q, set()).add(fut)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await fut
        finally:
            for q in queues:
                waiting = self._waiters.get(q)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[q]

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, queue: str) -> None:
        self._wake({queue})

    def _reconnected(self) -> None:
        self._wake(self._known | set(self._waiters))

    def _stopped(self) -> None:
        self._wake(set(self._waiters))

    def _wake(self, queues: set[str]) -> None:
        for queue in queues:
            waiting = self._waiters.get(queue)
            if not waiting:
                self._missed.add(queue)
                continue
            for fut in waiting:
                if not fut.done():
                    fut.set_result(None)


class FinishListener(_Listening):
    """LISTENs on the finish channel and wakes the waiters of the jobs each notification names.

    Started by the first wait; :meth:`poll_s_now` tells a waiter how long it may wait before
    reading again (None while notifications flow)."""

    task_name = "forebay-pg-finishes"

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        channel: str,
        waiters: FinishWaiters,
        *,
        poll_s: float,
    ) -> None:
        super().__init__(connect, channel, poll_s=poll_s)
        self.waiters = waiters

    def poll_s_now(self) -> float | None:
        return None if self.connected else self.poll_s

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == "*" or not payload:
            self.waiters.wake_all()
            return
        try:
            self.waiters.wake(int(i) for i in payload.split(","))
        except ValueError:  # not ours: someone else's NOTIFY on this channel
            self.waiters.wake_all()

    def _reconnected(self) -> None:
        self.waiters.wake_all()

    def _stopped(self) -> None:
        self.waiters.wake_all()
