"""forebay's exceptions: one root, and what each branch means.

```
ForebayError                      root of everything forebay raises
├── ConfigError                   bad settings, URL or handler declaration (fix the code/config);
│   │                             also a ValueError (a value out of range is one)
│   └── MissingExtra              an optional dependency is not installed (message has the pip line)
├── JobError                      raised by handlers to classify an outcome
│   ├── TransientError            retry after backoff while attempt < max_attempts
│   │   └── ResourceExhausted     a command's process was killed for memory (SIGKILL, exit
│   │                             137); retried, counted apart in metrics
│   └── PermanentError            dead-letter at once
│       └── InvalidResult         a handler's return value cannot be stored (not JSON, or
│           └── ResultTooLarge    larger than the queue's max_result_bytes)
├── Defer                         put the job back without spending an attempt (backpressure)
├── EnqueueError                  an enqueue was refused; nothing was stored
│   ├── InvalidPayload            payload is not JSON-serialisable, or a field is out of range
│   │   ├── PayloadValidationError  the queue's payload model refused the payload (`errors`)
│   │   ├── UnknownRun            the job names a run that does not exist (or was pruned)
│   │   └── UnknownParent         ``after=[...]`` names a job that does not exist
│   ├── RunSealed                 the run is sealed (or complete): only its own jobs add to it
│   └── QueueFull                 the queue is at max_depth; retry after `retry_after_s`
├── BackendError                  the store failed; the operation may be retried
│   └── BackendUnavailable        the store cannot be reached right now
├── JobNotFound                   no job with that id, or that key on that queue (or it was pruned)
├── RunNotFound                   no run with that id (or it was pruned)
├── WaitTimeout                   a job waited for was not finished in time; also a TimeoutError
├── JobStateConflict              the job's state does not allow that action (run-now of a
│                                 running job)
└── SinkError                     a sink could not write
    ├── SinkUnavailable           transient: the destination is down, retry later
    └── SinkRejected              permanent: the destination refused the data
```

Unclassified exceptions raised by a handler are treated as transient, and so is a timeout.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "Defer",
    "EnqueueError",
    "ForebayError",
    "InvalidPayload",
    "InvalidResult",
    "JobError",
    "JobNotFound",
    "JobStateConflict",
    "MissingExtra",
    "PayloadValidationError",
    "PermanentError",
    "QueueFull",
    "ResourceExhausted",
    "ResultTooLarge",
    "RunNotFound",
    "RunSealed",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "TenantQuotaFull",
    "TransientError",
    "UnknownParent",
    "UnknownRun",
    "WaitTimeout",
]


class ForebayError(Exception):
    """Root of every exception forebay raises."""


class ConfigError(ForebayError, ValueError):
    """Settings, URL or a handler declaration are invalid.

    Also a :class:`ValueError`: a value out of range (a negative backoff or defer delay) is
    one, so ``except ValueError`` catches it too.
    """


class MissingExtra(ConfigError):
    """An optional dependency is needed; the message gives the exact install line."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this feature needs the optional dependency {module!r}: pip install 'forebay[{extra}]'"
        )
        self.extra = extra
        self.module = module


class JobError(ForebayError):
    """Raised by a handler to say how its failure should be treated."""


class TransientError(JobError):
    """The failure may go away: retry after backoff while attempts remain."""


class ResourceExhausted(TransientError):
    """A command's process was killed from outside while no time limit was involved: SIGKILL
    (or exit status 137, a shell's report of it), which on Linux is the kernel's out-of-memory
    killer or a container's memory limit. Retried with backoff like any transient error (the
    memory may be free next time), and counted apart (``forebay_jobs_resource_exhausted_total``)
    so a queue that keeps running out of memory shows (see docs/subprocess.md)."""


class PermanentError(JobError):
    """Retrying cannot help: the job becomes dead at once."""


class InvalidResult(PermanentError):
    """A handler returned a value that cannot be stored as the job's result (it is not
    JSON-serialisable). The job becomes dead: running it again would return the same."""


class ResultTooLarge(InvalidResult):
    """A handler's return value, as JSON, is larger than its queue's ``max_result_bytes``."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(
            f"the handler returned {size} bytes of JSON, more than max_result_bytes={cap}; "
            "store large results elsewhere (a sink) and return a reference, or raise "
            "max_result_bytes on the handler"
        )
        self.size = size
        self.cap = cap


class Defer(ForebayError):
    """Put the job back to run after `delay`, without spending an attempt.

    Use it for backpressure from downstream (a rate limit, a full sink). The number of defers
    of one job is bounded by the queue's `max_defers`; past that the job is retried as if it
    had failed transiently.
    """

    def __init__(self, delay: timedelta | float = 1.0, reason: str = "deferred") -> None:
        self.delay_s = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if self.delay_s < 0:
            raise ConfigError("Defer delay must not be negative")
        super().__init__(f"{reason} (for {self.delay_s:g}s)")
        self.reason = reason


class EnqueueError(ForebayError):
    """An enqueue was refused; nothing was stored."""


class InvalidPayload(EnqueueError, ValueError):
    """The job's payload or one of its fields is invalid."""


class PayloadValidationError(InvalidPayload):
    """The payload model a queue declares (``@app.handler(queue, payload=Model)``) refused a
    payload; nothing was stored (in a batch, none of its jobs).

    ``errors`` is pydantic's list of field errors, as JSON (``loc``, ``msg``, ``type``,
    ``input``...); ``index`` is the refused job's position in the batch (0 for one job).
    """

    def __init__(
        self,
        queue: str,
        model: str,
        errors: list[dict[str, object]],
        *,
        index: int = 0,
        count: int = 1,
    ) -> None:
        which = f" (job {index} of a batch of {count}, counted from 0)" if count > 1 else ""
        summary = field_error_summary(errors)
        super().__init__(
            f"queue {queue!r} refuses the payload{which}: it does not match {model}: "
            f"{summary}; nothing was stored"
        )
        self.reason = f"the payload does not match {model}: {summary}"
        """What is wrong with the payload, in one line."""
        self.queue = queue
        self.model = model
        self.errors = errors
        self.index = index


_SHOWN_ERRORS = 5


def field_error_summary(errors: list[dict[str, object]]) -> str:
    """pydantic's field errors in one line: ``where: what`` for the first few."""

    def one(error: dict[str, object]) -> str:
        loc = error.get("loc")
        where = (
            ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) and loc else "payload"
        )
        return f"{where}: {error.get('msg', 'invalid')}"

    shown = "; ".join(one(e) for e in errors[:_SHOWN_ERRORS])
    more = len(errors) - _SHOWN_ERRORS
    return f"{shown}; and {more} more" if more > 0 else shown


class UnknownRun(InvalidPayload):
    """A job names a run (``run=...``) that does not exist, or was pruned."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}: start it with start_run() first")
        self.run_id = run_id


class UnknownParent(InvalidPayload):
    """A job's ``after=[...]`` names a job that does not exist (or was pruned)."""

    def __init__(self, job_ids: list[int]) -> None:
        shown = ", ".join(str(i) for i in job_ids)
        super().__init__(f"after=[...] names no such job: {shown} (a parent must exist)")
        self.job_ids = job_ids


class RunSealed(EnqueueError):
    """The run is sealed (or complete): no more top-level jobs may join it. The jobs its own
    running jobs enqueue (``job.enqueue(...)`` in a handler) still join."""

    def __init__(self, run_id: str, state: str) -> None:
        super().__init__(
            f"run {run_id!r} is {state}: no job may join it from outside; only the jobs of "
            "its running jobs' handlers still join"
        )
        self.run_id = run_id
        self.state = state


class QueueFull(EnqueueError):
    """The queue holds `max_depth` unfinished jobs; try again after `retry_after_s`."""

    def __init__(self, queue: str, max_depth: int, retry_after_s: float = 1.0) -> None:
        super().__init__(
            f"queue {queue!r} is full ({max_depth} jobs waiting or running); "
            f"retry after {retry_after_s:g}s or raise max_depth"
        )
        self.queue = queue
        self.max_depth = max_depth
        self.retry_after_s = retry_after_s


class TenantQuotaFull(QueueFull):
    """The tenant holds its ``max_depth`` quota of unfinished jobs (across every queue)."""

    def __init__(self, tenant: str, max_depth: int, retry_after_s: float = 1.0) -> None:
        EnqueueError.__init__(
            self,
            f"tenant {tenant!r} is at its quota ({max_depth} jobs waiting or running); "
            f"retry after {retry_after_s:g}s or raise the tenant's max_depth",
        )
        self.queue = ""
        self.tenant = tenant
        self.max_depth = max_depth
        self.retry_after_s = retry_after_s


class BackendError(ForebayError):
    """The backend failed to carry out an operation."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached right now; retry later."""

    retry_after_s: float = 1.0


class JobNotFound(ForebayError, LookupError):
    """No job with that id exists, or with that key on that queue (it may have been pruned)."""

    def __init__(
        self, job_id: int | None = None, *, queue: str | None = None, key: str | None = None
    ) -> None:
        if job_id is None:
            super().__init__(
                f"no job with key {key!r} on queue {queue!r} (it may have been pruned)"
            )
        else:
            super().__init__(f"no job with id {job_id} (it may have been pruned)")
        self.job_id = job_id
        self.queue = queue
        self.key = key


class RunNotFound(ForebayError, LookupError):
    """No run with that id exists (it may have been pruned)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} (it may have been pruned)")
        self.run_id = run_id


class WaitTimeout(ForebayError, TimeoutError):
    """A job waited for was not finished in time: it was still in ``state`` (queued, running).

    Also a :class:`TimeoutError`, so ``except TimeoutError`` catches it too."""

    def __init__(self, job_id: int, state: str, timeout_s: float) -> None:
        super().__init__(
            f"job {job_id} is still {state} after waiting {timeout_s:g}s for it to finish"
        )
        self.job_id = job_id
        self.state = state
        self.timeout_s = timeout_s


class JobStateConflict(ForebayError):
    """The job's state does not allow the action asked (e.g. run-now of a finished job)."""

    def __init__(self, job_id: int, state: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


class SinkError(ForebayError):
    """A sink could not write a batch."""


class SinkUnavailable(SinkError, TransientError):
    """The sink's destination is down; the batch will be retried."""


class SinkRejected(SinkError, PermanentError):
    """The sink's destination refused the data; retrying cannot help."""
