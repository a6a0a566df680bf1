"""Finish wake-ups by pub/sub: one subscribed connection per backend instance, once waited on.

Every script that finishes jobs (complete, dead letter, cancel) publishes their ids on the
channel ``P:finished`` (see :mod:`forebay.backends.redis.keys`), once per script call. A
process that waits for a job to finish subscribes before its first read (workers never do) and
hands the ids it hears to its waiters. Pub/sub keeps nothing for later: while the subscription
is down (server restart, network) waiters re-read every ``poll_s``, and every time it is made
again all of them re-read, since what was published meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from forebay.backends.finishes import FinishWaiters
from forebay.cancel import cancel_and_wait

__all__ = ["FinishSubscriber"]

log = logging.getLogger("forebay.backends.redis")

_HEALTH_CHECK_EVERY_S = 15.0
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 2.0


class FinishSubscriber:
    """Subscribes to the finish channel and wakes the waiters of the jobs each message names."""

    def __init__(
        self,
        client: Callable[[], aioredis.Redis],
        channel: str,
        waiters: FinishWaiters,
        *,
        poll_s: float,
    ) -> None:
        self._client = client
        self.channel = channel
        self.waiters = waiters
        self.poll_s = poll_s
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def poll_s_now(self) -> float | None:
        """How long a waiter may wait before reading again: None while messages flow."""
        return None if self.subscribed else self.poll_s

    async def started(self, timeout_s: float) -> None:
        """Subscribe in the background and wait (at most ``timeout_s``) until it is in effect."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="forebay-redis-finishes")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._subscribed.wait()

    async def stop(self) -> None:
        """Unsubscribe and wake every waiter (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        self._subscribed.clear()
        self.waiters.wake_all()

    async def _run(self) -> None:
        delay = _FIRST_BACKOFF_S
        reported = False  # one warning per outage
        while True:
            try:
                await self._session()
            except Exception as exc:
                if not reported:
                    log.warning(
                        "cannot subscribe to finished jobs (%s); waiters poll every %.2fs "
                        "until it is back",
                        exc,
                        self.poll_s,
                    )
                    reported = True
            else:
                delay, reported = _FIRST_BACKOFF_S, False
            finally:
                self._subscribed.clear()
                self.waiters.wake_all()  # they poll from now on
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _session(self) -> None:
        pubsub = self._client().pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=_HEALTH_CHECK_EVERY_S)
                if message is None:
                    await pubsub.ping()  # a silently dropped connection only shows when used
                    continue
                self._handle(message)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # Subscribed (again, after redis-py reconnected): anything may have been missed.
            self._subscribed.set()
            self.waiters.wake_all()
        elif kind == "message":
            try:
                self.waiters.wake(int(i) for i in str(message["data"]).split(","))
            except ValueError:  # not ours: someone else published on this channel
                self.waiters.wake_all()
