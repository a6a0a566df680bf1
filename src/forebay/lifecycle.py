"""Background loops, each a named task with an idempotent start and stop.

Every loop that runs beside the work — the worker's heartbeat, reclaimer and pruner, the
handler pool's supervisor and its connections to the children, the supervised service worker,
a dataset sink's flusher and its Hub sync — is one :class:`BackgroundTask`:

* :meth:`~BackgroundTask.start` creates the task unless it is running (a task that has ended
  is started again);
* :meth:`~BackgroundTask.stop` cancels it and returns once it has ended, asking again should a
  library drop the cancellation (:func:`forebay.cancel.cancel_and_wait`); stopping a task that
  is not running does nothing;
* :meth:`~BackgroundTask.join` waits for it to end by itself (a flusher draining, a
  supervisor told to finish), without cancelling it.

A loop that ends with an unexpected exception is logged (logger ``forebay.lifecycle``) instead
of vanishing silently with its error unread.

Concurrency hazards, and why they are safe: everything here runs on one event loop thread, and
``start`` looks at the task and replaces it with no await in between, so two callers cannot
both start one; ``join`` reads the task again after each wait, so it also waits for a task that
was started again meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from forebay.cancel import cancel_and_wait

__all__ = ["BackgroundTask"]

log = logging.getLogger("forebay.lifecycle")


class BackgroundTask:
    """One named background loop: ``run()`` is the coroutine function it runs."""

    def __init__(self, name: str, run: Callable[[], Coroutine[object, object, None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"BackgroundTask({self.name!r}, running={self.running})"

    @property
    def running(self) -> bool:
        """The task exists and has not ended."""
        return self._task is not None and not self._task.done()

    def start(self) -> bool:
        """Start the loop on the running event loop unless it runs; True if this started it."""
        if self.running:
            return False
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._ended)
        return True

    async def stop(self) -> None:
        """Cancel the loop and return once it has ended. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])

    async def join(self) -> None:
        """Wait until the loop ends by itself (not cancelling it)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # read here, so asyncio never reports it as unread
        if error is not None:
            log.error("background task %s failed", self.name, exc_info=error)
