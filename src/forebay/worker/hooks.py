"""The queue hooks (``on_success``, ``on_failure``, ``on_exhausted``): user code told about an
outcome once it is recorded, which can neither block nor undo it.

A hook is an alert, a metric pushed somewhere, a follow-up enqueued: code that may be slow, hang
or fail. So the settler records the outcomes first, and only then hands the hooks of the
recorded ones to :class:`Hooks` (an outcome the store refused, a lost lease, runs no hook: the
job runs again). Each call is a task of its own, under the queue's ``hook_timeout_s``:

* a slow hook holds neither the settler's next flush nor a lane's free slot; past
  :data:`MAX_RUNNING` calls at once, a further call is dropped and logged, so hooks slower
  than the jobs cannot fill the memory;
* a hook that raises, or that runs past its time limit (it is cancelled then), is logged
  (logger ``forebay.worker``) and changes nothing else;
* :meth:`Hooks.drained` waits for the calls still running; the worker awaits it when it
  shuts down, so no hook is cut short by a stopping worker (each is bounded by its limit),
  unless it is told to stop now (a second signal): then the calls still running are cancelled.

Which hooks run for which outcome is decided once, by :func:`hooks_for`: completed →
``on_success(job, result)``; retried or dead → ``on_failure(job, error)``; dead →
``on_exhausted(job, error)`` too. A deferred or released job failed no attempt: no hook.

Concurrency hazards, and why they are safe: everything runs on the worker's event loop; a task
is added to the tracked set before the loop can run it, and removes itself when done, so
:meth:`Hooks.drained` (which looks again after each wait) never misses one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forebay import jsonio
from forebay.cancel import cancel_and_wait
from forebay.job import JSON, Job
from forebay.outcome import JobOutcome
from forebay.queue_config import QueueConfig

__all__ = ["HookCall", "Hooks", "hooks_for"]

log = logging.getLogger("forebay.worker")


@dataclass(frozen=True, slots=True)
class HookCall:
    """One hook call, ready to make: ``call()`` is ``hook(job, argument)``; ``name`` (the
    hook's) and ``job_id`` are for the logs."""

    name: str
    job_id: int
    call: Callable[[], Awaitable[None]]


def hooks_for(
    job: Job,
    config: QueueConfig,
    outcome: JobOutcome,
    *,
    error: BaseException | None,
    result_json: str | None,
) -> list[HookCall]:
    """The hook calls a recorded ``outcome`` of ``job`` makes (see the module docstring)."""
    calls: list[HookCall] = []
    if outcome is JobOutcome.COMPLETED:
        if config.on_success is not None:
            result: JSON = None if result_json is None else jsonio.loads(result_json)
            call = functools.partial(config.on_success, job, result)
            calls.append(HookCall("on_success", job.id, call))
        return calls
    if outcome not in (JobOutcome.RETRIED, JobOutcome.DEAD):
        return calls
    failure = error if error is not None else RuntimeError("unknown error")
    if config.on_failure is not None:
        calls.append(
            HookCall("on_failure", job.id, functools.partial(config.on_failure, job, failure))
        )
    if outcome is JobOutcome.DEAD and config.on_exhausted is not None:
        exhausted = functools.partial(config.on_exhausted, job, failure)
        calls.append(HookCall("on_exhausted", job.id, exhausted))
    return calls


MAX_RUNNING: int = 1000
"""The most hook calls one worker runs at once. Past it a call is dropped, with an error
logged: hooks slower than the jobs would otherwise pile up in memory without bound."""


class Hooks:
    """Runs hook calls as tracked tasks, each under its queue's time limit, at most
    ``max_running`` at once (see :data:`MAX_RUNNING`)."""

    def __init__(self, max_running: int = MAX_RUNNING) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_running = max_running

    @property
    def running(self) -> int:
        """Hook calls not finished yet."""
        return len(self._tasks)

    def start(self, config: QueueConfig, calls: list[HookCall]) -> None:
        """Start each call in a task of its own (on the running event loop); return at once."""
        for call in calls:
            if len(self._tasks) >= self._max_running:
                log.error(
                    "%s hook of queue %s for job %s not run: %d hook calls still run (hooks "
                    "slower than the jobs; make them faster, or lower hook_timeout_s)",
                    call.name,
                    config.name,
                    call.job_id,
                    len(self._tasks),
                )
                continue
            task = asyncio.create_task(
                _run(config, call), name=f"forebay-{call.name}-{config.name}-{call.job_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drained(self, stop_now: asyncio.Event | None = None) -> None:
        """Wait until every hook call started so far has ended (each within its limit); once
        ``stop_now`` is set (a second signal), cancel those still running instead."""
        told = None if stop_now is None else asyncio.ensure_future(stop_now.wait())
        try:
            while self._tasks and (told is None or not told.done()):
                waited = set(self._tasks) if told is None else {*self._tasks, told}
                await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if told is not None:
                told.cancel()
        if self._tasks:
            log.warning("stopping now: cancelling %d running hook calls", len(self._tasks))
            await cancel_and_wait(set(self._tasks))


async def _run(config: QueueConfig, call: HookCall) -> None:
    try:
        async with asyncio.timeout(config.hook_timeout_s) as limit:
            await call.call()
    except TimeoutError:
        if not limit.expired():
            log.exception(
                "%s hook of queue %s failed for job %s", call.name, config.name, call.job_id
            )
            return
        log.error(
            "%s hook of queue %s for job %s took longer than %gs (hook_timeout_s); cancelled",
            call.name,
            config.name,
            call.job_id,
            config.hook_timeout_s,
        )
    except Exception:
        log.exception("%s hook of queue %s failed for job %s", call.name, config.name, call.job_id)
