"""forebay's exceptions: one root, and what each branch means.

```
ForebayError                      root of everything forebay raises
├── ConfigError                   bad settings, URL or handler declaration (fix the code/config);
│   │                             also a ValueError (a value out of range is one)
│   └── MissingExtra              an optional dependency is not installed (message has the pip line)
├── JobError                      raised by handlers to classify an outcome
│   ├── TransientError            retry after backoff while attempt < max_attempts
│   └── PermanentError            dead-letter at once
├── Defer                         put the job back without spending an attempt (backpressure)
├── EnqueueError                  an enqueue was refused; nothing was stored
│   ├── InvalidPayload            payload is not JSON-serialisable, or a field is out of range
│   └── QueueFull                 the queue is at max_depth; retry after `retry_after_s`
├── BackendError                  the store failed; the operation may be retried
│   └── BackendUnavailable        the store cannot be reached right now
├── JobNotFound                   no job with that id (or it was pruned)
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
    "JobError",
    "JobNotFound",
    "JobStateConflict",
    "MissingExtra",
    "PermanentError",
    "QueueFull",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "TransientError",
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


class PermanentError(JobError):
    """Retrying cannot help: the job becomes dead at once."""


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


class BackendError(ForebayError):
    """The backend failed to carry out an operation."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached right now; retry later."""

    retry_after_s: float = 1.0


class JobNotFound(ForebayError, LookupError):
    """No job with that id exists (it may have been pruned)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job with id {job_id} (it may have been pruned)")
        self.job_id = job_id


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
