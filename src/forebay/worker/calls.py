"""One way to call a handler, for the worker's lanes and for handler processes alike.

A queue's handler takes one job or, when the queue has a ``batch_size``, a list of them; it is a
coroutine function (awaited on the event loop) or a plain function (run in a worker thread, so
it never blocks the loop). :func:`call_handler` makes that call, with ``job.progress()`` wired
to the given reporter and bounded by a timeout, and answers with the per-job errors a batch
handler returned. The worker's lanes call it with the job's ``timeout_s`` (else the queue's); a
handler process (:mod:`forebay.execution.child`) calls it without one, since the worker that
sent it the call keeps the time and cancels the call when it runs out.

A thread cannot be stopped from outside. So a plain function that overruns its timeout is not
abandoned: the call waits until the thread really returns (the job keeps its lease, heartbeats
go on, the slot stays taken) and only then fails with the :class:`TimeoutError`, so the job's
retry never starts while its first run still has side effects to make. A handler process does
the same when the worker cancels a call (``wait_for_thread=True``): it answers only once the
thread returned, or is killed by the worker (:mod:`forebay.execution.pool`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from forebay.job import Job, ProgressReporter, progress_reporter
from forebay.queue_config import QueueConfig

__all__ = ["BatchErrors", "call_handler"]

log = logging.getLogger("forebay.worker")

BatchErrors: TypeAlias = Mapping[int, BaseException | None]
"""Job id → the error of that job (None or absent: it succeeded)."""


async def call_handler(
    config: QueueConfig,
    jobs: Sequence[Job],
    *,
    timeout_s: float | None = None,
    progress: ProgressReporter | None = None,
    wait_for_thread: bool = False,
) -> BatchErrors:
    """Call ``config``'s handler once: with ``jobs[0]``, or with ``jobs`` as a list when the
    queue takes batches.

    Returns the per-job errors a batch handler returned (``{}`` for a single job, or when a
    batch handler returned nothing). Raises what the handler raised; past ``timeout_s``, a
    :class:`TimeoutError` that names it (for a plain function, once its thread returned).
    ``wait_for_thread``: a cancelled call of a plain function ends only once its thread
    returned (a handler process's calls).
    """
    if progress is not None:
        progress_reporter.set(progress)  # this task's own context (and its threads')
    handler = config.handler
    if handler is None:
        raise RuntimeError(f"queue {config.name!r} has no handler")
    batch = config.batch_size is not None
    argument: Job | list[Job] = list(jobs) if batch else jobs[0]
    what = "batch handler" if batch else "handler"
    if not config.is_async:
        call = functools.partial(handler, argument)  # type: ignore[arg-type]
        returned = await _in_thread(call, timeout_s, what, jobs, wait_for_thread=wait_for_thread)
        return returned if batch and isinstance(returned, Mapping) else {}
    try:
        async with asyncio.timeout(timeout_s):
            returned = await handler(argument)  # type: ignore[arg-type,misc]
    except TimeoutError:
        if timeout_s is None:  # the handler's own, not ours
            raise
        raise TimeoutError(f"{what} ran longer than timeout_s={timeout_s:g}") from None
    return returned if batch and isinstance(returned, Mapping) else {}


async def _in_thread(
    call: Callable[[], object],
    timeout_s: float | None,
    what: str,
    jobs: Sequence[Job],
    *,
    wait_for_thread: bool,
) -> object:
    """Run ``call`` in a worker thread (in this task's context); past ``timeout_s``, wait for
    the thread to return, then raise TimeoutError (see the module docstring)."""
    context = contextvars.copy_context()  # job.progress() reaches this task's reporter
    thread = asyncio.get_running_loop().run_in_executor(None, context.run, call)
    try:
        # asyncio.wait never cancels what it waits for: the thread's future stays ours.
        done, _ = await asyncio.wait({thread}, timeout=timeout_s)
    except asyncio.CancelledError:
        if wait_for_thread:
            await _returned(thread)
        raise
    if done:
        return thread.result()
    ids = ", ".join(str(job.id) for job in jobs)
    log.warning(
        "%s of job %s ran longer than timeout_s=%g; a thread cannot be stopped, so the job "
        "keeps its lease until the handler returns, then counts as timed out",
        what,
        ids,
        timeout_s,
        extra={"job_id": jobs[0].id, "queue": jobs[0].queue},
    )
    await _returned(thread)
    raise TimeoutError(f"{what} ran longer than timeout_s={timeout_s:g}")


async def _returned(thread: asyncio.Future[object]) -> None:
    """Wait until ``thread`` returned, whatever cancellations arrive meanwhile (each one is
    raised again once it did); its result or error is dropped (the call timed out)."""
    cancelled = False
    while not thread.done():
        try:
            await asyncio.wait({thread})
        except asyncio.CancelledError:
            cancelled = True
    if not thread.cancelled():
        thread.exception()  # mark it retrieved
    if cancelled:
        raise asyncio.CancelledError
