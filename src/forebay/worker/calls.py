"""One way to call a handler, for the worker's lanes and for handler processes alike.

A queue's handler takes one job or, when the queue has a ``batch_size``, a list of them; it is a
coroutine function (awaited on the event loop) or a plain function (run in a worker thread, so
it never blocks the loop). :func:`call_handler` makes that call, with ``job.progress()`` wired
to the given reporter and bounded by a timeout, and answers with the per-job errors a batch
handler returned and, for a one-job handler, its return value as JSON text: the job's result
(checked against the queue's ``max_result_bytes``; a batch handler's return value is its
per-job errors, so a batch stores no results). The worker's lanes call it with the job's
``timeout_s`` (else the queue's); a handler process (:mod:`forebay.execution.child`) calls it
without one, since the worker that sent it the call keeps the time and cancels the call when it
runs out.

A thread cannot be stopped from outside. So a plain function that overruns its timeout is not
abandoned: the call waits until the thread really returns (the job keeps its lease, heartbeats
go on, the slot stays taken) and only then fails with the :class:`TimeoutError`, so the job's
retry never starts while its first run still has side effects to make. A handler process does
the same when the worker cancels a call (``wait_for_thread=True``): it answers only once the
thread returned, or is killed by the worker (:mod:`forebay.execution.pool`).

On a queue with a payload model, the jobs' payloads become model instances here, in the process
that runs the handler (:func:`forebay.payloads.read_payloads`); a job whose stored payload the
model refuses is not handed to the handler and fails permanently.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from forebay import jsonio
from forebay.errors import InvalidResult, ResultTooLarge
from forebay.job import Job, ProgressReporter, progress_reporter
from forebay.payloads import read_payloads
from forebay.queue_config import QueueConfig

__all__ = ["Answer", "BatchErrors", "ResultText", "call_handler", "encode_result"]

log = logging.getLogger("forebay.worker")

BatchErrors: TypeAlias = Mapping[int, BaseException | None]
"""Job id → the error of that job (None or absent: it succeeded)."""

Answer: TypeAlias = tuple[BatchErrors, str | None]
"""What a handler call answers: per-job errors of a batch, and a one-job handler's result as
JSON text (None: it returned None)."""

_NO_ERRORS: BatchErrors = {}


class ResultText(str):
    """A result already encoded (and checked) where the handler ran: a handler that returns
    one (the handler pool's stand-in for the real handler) has its result stored as is."""

    __slots__ = ()


def encode_result(value: object, max_bytes: int) -> str:
    """``value`` as the JSON text of a job's result; InvalidResult when it is not JSON,
    ResultTooLarge when longer than ``max_bytes`` (UTF-8)."""
    try:
        text = jsonio.dumps_strict(value)
    except (TypeError, ValueError) as exc:
        raise InvalidResult(
            f"the handler returned a value that is not JSON ({exc}); return JSON data "
            "(dicts, lists, strings, numbers, booleans, None)"
        ) from None
    if len(text) > max_bytes // 4:  # else short enough: a character is at most 4 bytes
        size = len(text.encode())
        if size > max_bytes:
            raise ResultTooLarge(size, max_bytes)
    return text


async def call_handler(
    config: QueueConfig,
    jobs: Sequence[Job],
    *,
    timeout_s: float | None = None,
    progress: ProgressReporter | None = None,
    wait_for_thread: bool = False,
) -> Answer:
    """Call ``config``'s handler once: with ``jobs[0]``, or with ``jobs`` as a list when the
    queue takes batches.

    Returns the per-job errors a batch handler returned (``{}`` for a single job, or when a
    batch handler returned nothing) and a single job's result as JSON text (None when the
    handler returned None). Raises what the handler raised; past ``timeout_s``, a
    :class:`TimeoutError` that names it (for a plain function, once its thread returned);
    InvalidResult or ResultTooLarge for a return value that cannot be stored.
    ``wait_for_thread``: a cancelled call of a plain function ends only once its thread
    returned (a handler process's calls).
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
            return refused, None
    argument: Job | list[Job] = list(jobs) if batch else jobs[0]
    what = "batch handler" if batch else "handler"
    if not config.is_async:
        call = functools.partial(handler, argument)  # type: ignore[arg-type]
        returned = await _in_thread(call, timeout_s, what, jobs, wait_for_thread=wait_for_thread)
    else:
        try:
            async with asyncio.timeout(timeout_s):
                returned = await handler(argument)  # type: ignore[arg-type,misc]
        except TimeoutError:
            if timeout_s is None:  # the handler's own, not ours
                raise
            raise TimeoutError(f"{what} ran longer than timeout_s={timeout_s:g}") from None
    if batch:
        errors = returned if isinstance(returned, Mapping) else _NO_ERRORS
        return ({**errors, **refused} if refused else errors), None
    if returned is None:
        return _NO_ERRORS, None
    if type(returned) is ResultText:
        return _NO_ERRORS, returned
    return _NO_ERRORS, encode_result(returned, config.max_result_bytes)


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
