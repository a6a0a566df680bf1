"""One way to call a handler, for the worker's lanes and for handler processes alike.

A queue's handler takes one job or, when the queue has a ``batch_size``, a list of them; it is a
coroutine function (awaited on the event loop) or a plain function (run in a worker thread, so
it never blocks the loop). :func:`call_handler` makes that call, with ``job.progress()`` wired
to the given reporter and bounded by a timeout, and answers with the per-job errors a batch
handler returned. The worker's lanes call it with the queue's ``timeout_s``; a handler process
(:mod:`forebay.execution.child`) calls it without one, since the worker that sent it the call
keeps the time and cancels the call when it runs out.

On a queue with a payload model, the jobs' payloads become model instances here, in the process
that runs the handler (:func:`forebay.payloads.read_payloads`); a job whose stored payload the
model refuses is not handed to the handler and fails permanently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from forebay.job import Job, ProgressReporter, progress_reporter
from forebay.payloads import read_payloads
from forebay.queue_config import QueueConfig

__all__ = ["BatchErrors", "call_handler"]

BatchErrors: TypeAlias = Mapping[int, BaseException | None]
"""Job id → the error of that job (None or absent: it succeeded)."""


async def call_handler(
    config: QueueConfig,
    jobs: Sequence[Job],
    *,
    timeout_s: float | None = None,
    progress: ProgressReporter | None = None,
) -> BatchErrors:
    """Call ``config``'s handler once: with ``jobs[0]``, or with ``jobs`` as a list when the
    queue takes batches.

    Returns the per-job errors a batch handler returned (``{}`` for a single job, or when a
    batch handler returned nothing). Raises what the handler raised; past ``timeout_s``, a
    :class:`TimeoutError` that names it.
    """
    if progress is not None:
        progress_reporter.set(progress)  # this task's own context (and its threads')
    handler = config.handler
    if handler is None:
        raise RuntimeError(f"queue {config.name!r} has no handler")
    batch = config.batch_size is not None
    refused: BatchErrors | None = None
    if config.payload_model is not None:  # the only cost to queues without a model
        jobs, refused = _typed_payloads(config, jobs, batch)
        if not jobs:
            return refused
    argument: Job | list[Job] = list(jobs) if batch else jobs[0]
    try:
        async with asyncio.timeout(timeout_s):
            if config.is_async:
                returned = await handler(argument)  # type: ignore[arg-type,misc]
            else:
                returned = await asyncio.to_thread(handler, argument)  # type: ignore[arg-type]
    except TimeoutError:
        if timeout_s is None:  # the handler's own, not ours
            raise
        what = "batch handler" if batch else "handler"
        raise TimeoutError(f"{what} ran longer than timeout_s={timeout_s:g}") from None
    errors = returned if batch and isinstance(returned, Mapping) else {}
    return {**errors, **refused} if refused else errors


def _typed_payloads(
    config: QueueConfig, jobs: Sequence[Job], batch: bool
) -> tuple[Sequence[Job], BatchErrors]:
    """The jobs whose payloads are now model instances, and the errors of the others (raised
    for a single job, as its handler's error would be)."""
    assert config.payload_model is not None
    refused = read_payloads(config.payload_model, jobs)
    if not refused:
        return jobs, {}
    if not batch:
        raise refused[jobs[0].id]
    return [j for j in jobs if j.id not in refused], refused
