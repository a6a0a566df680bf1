"""How one queue's jobs are handled: the handler and its policy (attempts, timeouts, leases)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TypeAlias

from forebay.backoff import Backoff
from forebay.errors import ConfigError
from forebay.flow import NO_LIMITS, FlowLimits, KeySpec, Rate, check_key_spec, resolve_key
from forebay.job import JSON, Job, NewJob, PayloadText, validate_queue_name
from forebay.payloads import PayloadModel, check_model

__all__ = ["BatchHandler", "ExhaustedHook", "FailureHook", "Handler", "QueueConfig", "SuccessHook"]

Handler: TypeAlias = Callable[[Job], Awaitable[object]] | Callable[[Job], object]
BatchHandler: TypeAlias = Callable[
    [Sequence[Job]],
    Awaitable[Mapping[int, BaseException | None] | None]
    | Mapping[int, BaseException | None]
    | None,
]
ExhaustedHook: TypeAlias = Callable[[Job, BaseException], Awaitable[None]]
FailureHook: TypeAlias = Callable[[Job, BaseException], Awaitable[None]]
SuccessHook: TypeAlias = Callable[[Job, JSON], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue's handler and policy. Built by :meth:`forebay.Forebay.handler`.

    * ``max_attempts``: error attempts before the job is dead (``1`` = never retry).
    * ``max_deliveries``: leases (including ones that ended in a worker crash) before a job is
      declared a crash-looping poison and dead-lettered; default ``max_attempts + 3``.
    * ``max_defers``: :class:`~forebay.Defer` signals honoured before a defer counts as an error.
    * ``timeout_s``: wall time one run (or one batch) may take; past it, a transient error.
    * ``lease_s``: how long a lease lasts without a heartbeat (heartbeats every ``lease_s / 3``);
      a crashed worker's jobs run again about ``lease_s`` after the crash.
    * ``concurrency``: handler calls running at once in one worker process.
    * ``batch_size``: when set, the handler takes a list of up to that many jobs and may return
      ``{job_id: exception}`` for the ones that failed (the others complete).
    * ``max_depth``: unfinished jobs the queue may hold; enqueue beyond it raises QueueFull.
    * ``on_success``: ``async def hook(job, result)``, run when a job completed (``result``:
      what its handler returned, as stored: JSON data, or None).
    * ``on_failure``: ``async def hook(job, error)``, run after every failed attempt, whether
      the job is retried or dead (``error``: the exception, as classified).
    * ``on_exhausted``: ``async def hook(job, error)``, run once when a job becomes dead.
    * ``hook_timeout_s``: how long one hook call may take before it is cancelled.

    Flow limits (see :mod:`forebay.flow` and docs/flow-control.md), held by the job store
    across every worker:

    * ``rate_limit``: jobs of the queue started per period, e.g. ``"50/s"``;
      ``rate_limit_key`` with ``rate_limit_per_key``: the same for each key (``"10/m"``).
    * ``global_concurrency``: jobs of the queue running at once, however many workers;
      ``concurrency_key`` with ``concurrency_per_key``: at most that many per key.
    * ``fair_key``: leasing takes the keys' jobs in turns (a tenant with a million queued jobs
      and one with ten share the workers).
    * ``priority_aging``: a queued job's effective priority rises by one per that many
      seconds it has been due, so low priority work is delayed but never starved.

    Each key is a path such as ``"payload.user_id"`` or ``"tenant"``, or a callable given the
    :class:`~forebay.job.NewJob`; it is worked out when the job is enqueued and stored with it
    (:meth:`with_flow_keys`). A queue declared without a handler (a producer-only app's
    :meth:`~forebay.Forebay.queue`) may name keys without their limits: its app works the keys
    out at enqueue, and the limits are the workers' to declare.

    The hooks run once the outcome is recorded in the store, each in a task of its own: they
    can neither block nor undo it, and their errors are logged (see
    :mod:`forebay.worker.hooks`).
    * ``max_result_bytes``: the largest return value a handler may leave as ``job.result``
      (JSON, in UTF-8 bytes); a larger one makes the job dead with ``ResultTooLarge``.
    * ``payload_model``: a pydantic model every payload is validated against at enqueue, and
      that the handler receives as ``job.payload`` (see :mod:`forebay.payloads`).
    * ``completed_retention``, ``dead_retention``, ``cancelled_retention``: how long this
      queue's finished jobs are kept before the workers prune them (None: the worker's
      setting, ``--completed-retention`` and the like).

    A job may carry its own ``max_attempts`` and ``timeout_s``, given at enqueue; the queue's
    apply to the jobs that do not.
    """

    name: str
    handler: Handler | BatchHandler | None = None
    in_process: bool = False
    """Call the handler in the worker's own event loop even when the worker sends handler calls
    to handler processes (a command queue's: :mod:`forebay.execution.command`)."""
    max_attempts: int = 5
    max_deliveries: int | None = None
    max_defers: int = 100
    timeout_s: float = 300.0
    lease_s: float = 30.0
    concurrency: int = 8
    batch_size: int | None = None
    backoff: Backoff = field(default_factory=Backoff)
    max_depth: int | None = None
    on_exhausted: ExhaustedHook | None = None
    on_success: SuccessHook | None = None
    on_failure: FailureHook | None = None
    hook_timeout_s: float = 60.0
    max_result_bytes: int = 1_048_576
    payload_model: PayloadModel | None = None
    completed_retention: timedelta | None = None
    dead_retention: timedelta | None = None
    cancelled_retention: timedelta | None = None
    rate_limit: Rate | str | None = None
    rate_limit_key: KeySpec | None = None
    rate_limit_per_key: Rate | str | None = None
    global_concurrency: int | None = None
    concurrency_key: KeySpec | None = None
    concurrency_per_key: int | None = None
    fair_key: KeySpec | None = None
    priority_aging: timedelta | float | None = None
    limits: FlowLimits = field(init=False, default=NO_LIMITS)
    """The flow limits the options above make (what the workers store for the queue)."""
    is_async: bool = field(init=False, default=False)
    """Whether the handler is a coroutine function (worked out once, not per job)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))
        try:
            validate_queue_name(self.name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        checks = {
            "max_attempts": self.max_attempts >= 1,
            "max_defers": self.max_defers >= 0,
            "timeout_s": self.timeout_s > 0,
            "lease_s": self.lease_s > 0,
            "concurrency": self.concurrency >= 1,
            "batch_size": self.batch_size is None or self.batch_size >= 1,
            "max_depth": self.max_depth is None or self.max_depth >= 1,
            "max_result_bytes": self.max_result_bytes >= 1,
            "hook_timeout_s": self.hook_timeout_s > 0,
            **{
                name: value is None or (isinstance(value, timedelta) and value >= timedelta(0))
                for name, value in self.retention.items()
            },
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"queue {self.name!r}: invalid {', '.join(bad)} (must be positive)")
        if self.max_deliveries is not None and self.max_deliveries < self.max_attempts:
            raise ConfigError(
                f"queue {self.name!r}: max_deliveries ({self.max_deliveries}) must be at least "
                f"max_attempts ({self.max_attempts}): every attempt is a delivery"
            )
        for name, hook in self.hooks.items():
            if hook is not None and not inspect.iscoroutinefunction(hook):
                raise ConfigError(f"queue {self.name!r}: {name} must be an async function")
        if self.payload_model is not None:
            check_model(self.name, self.payload_model)
        object.__setattr__(self, "limits", self._flow_limits())

    def _flow_limits(self) -> FlowLimits:
        where = f"queue {self.name!r}"
        for name in ("rate_limit_key", "concurrency_key", "fair_key"):
            check_key_spec(f"{where}: {name}", getattr(self, name))
        for key_name, limit_name in (
            ("rate_limit_key", "rate_limit_per_key"),
            ("concurrency_key", "concurrency_per_key"),
        ):
            has_key = getattr(self, key_name) is not None
            has_limit = getattr(self, limit_name) is not None
            # A producer-only declaration may name the key alone (the workers give the limit).
            if has_limit != has_key and (has_limit or self.handler is not None):
                raise ConfigError(f"{where}: {key_name} and {limit_name} go together")
        aging = self.priority_aging
        if isinstance(aging, timedelta):
            aging = aging.total_seconds()
        try:
            rate = None if self.rate_limit is None else Rate.parse(self.rate_limit)
            per_key = (
                None if self.rate_limit_per_key is None else Rate.parse(self.rate_limit_per_key)
            )
            return FlowLimits(
                rate=rate,
                rate_per_key=per_key,
                concurrency=self.global_concurrency,
                concurrency_per_key=self.concurrency_per_key,
                fair=self.fair_key is not None,
                aging_s=aging,
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def flow_keys(self, job: NewJob) -> dict[str, str | None]:
        """The flow keys this queue's declarations give ``job`` (only the declared ones)."""
        out: dict[str, str | None] = {}
        for name, spec in (
            ("rate_key", self.rate_limit_key),
            ("concurrency_key", self.concurrency_key),
            ("fair_key", self.fair_key),
        ):
            if spec is not None:
                out[name] = resolve_key(name, spec, job)
        return out

    @property
    def keyed(self) -> bool:
        """Whether the queue declares a flow key (its jobs get keys at enqueue)."""
        return (
            self.rate_limit_key is not None
            or self.concurrency_key is not None
            or self.fair_key is not None
        )

    def with_flow_keys(self, job: NewJob) -> NewJob:
        """``job`` with each key this queue declares and the job does not carry worked out (a
        key given explicitly wins); InvalidPayload when a key is not a str or an int."""
        missing = [
            (name, spec)
            for name, spec in (
                ("rate_key", self.rate_limit_key),
                ("concurrency_key", self.concurrency_key),
                ("fair_key", self.fair_key),
            )
            if spec is not None and getattr(job, name) is None
        ]
        if not missing:
            return job
        view = job
        if type(job.payload) is PayloadText:  # validated by a payload model: read it back once
            view = replace(job, payload=job.payload.parse())
        keys = {name: resolve_key(name, spec, view) for name, spec in missing}
        return replace(
            job,
            rate_key=keys.get("rate_key", job.rate_key),
            concurrency_key=keys.get("concurrency_key", job.concurrency_key),
            fair_key=keys.get("fair_key", job.fair_key),
        )

    @property
    def hooks(self) -> dict[str, SuccessHook | FailureHook | None]:
        """The queue's hooks by name (None: not set)."""
        return {
            "on_success": self.on_success,
            "on_failure": self.on_failure,
            "on_exhausted": self.on_exhausted,
        }

    @property
    def retention(self) -> dict[str, timedelta | None]:
        """The queue's own retention per terminal state (None: the worker's)."""
        return {
            "completed_retention": self.completed_retention,
            "dead_retention": self.dead_retention,
            "cancelled_retention": self.cancelled_retention,
        }

    @property
    def delivery_limit(self) -> int:
        return self.max_deliveries if self.max_deliveries is not None else self.max_attempts + 3
