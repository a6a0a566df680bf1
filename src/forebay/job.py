"""Jobs and the values that move them between states.

States (DESIGN §2)::

        enqueue (after=[...])   every parent completed
      (none) ─────────▶ waiting ─────────────────────┐   (a parent dead or cancelled:
                                                     ▼    the waiting job is cancelled)
                enqueue                lease                  success
      (none) ──────────▶ queued ──────────────▶ running ──────────────▶ completed
                          ▲   ▲                   │  │
            retry(run_at) │   │ lease expired /   │  │ permanent error, attempts exhausted,
                          │   │ shutdown release  │  │ or crash limit reached
                          └───┴───────────────────┘  ▼
                                 replay ◀──────── dead
      waiting, queued, running ─ cancel ─▶ cancelled

Counters kept on every job:

* ``attempt`` — tries spent on errors, 1-based while running. A lease counts one attempt; a
  crash (expired lease), a defer and a graceful release give it back.
* ``deliveries`` — leases that ended in an outcome or a crash. A job that crashes its worker
  again and again is dead-lettered once ``deliveries`` passes the queue's ``max_deliveries``.
* ``defers`` — times the handler raised :class:`~forebay.Defer`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import MemberDescriptorType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

from forebay import jsonio
from forebay.errors import InvalidPayload
from forebay.flow import check_key, check_tenant

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

__all__ = [
    "JSON",
    "MAX_ERRORS_KEPT",
    "MAX_TRACEBACK_BYTES",
    "AttemptError",
    "Completion",
    "DeadCursor",
    "Enqueuer",
    "Job",
    "JobFilter",
    "JobState",
    "Lease",
    "NewJob",
    "PayloadText",
    "QueueCounts",
    "utcnow",
]

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None

TERMINAL_STATES = frozenset({"completed", "dead", "cancelled"})

MAX_ERRORS_KEPT = 10
"""Attempts whose errors a job keeps (:attr:`Job.errors`): the oldest goes when one more fails."""
MAX_TRACEBACK_BYTES = 8192
"""Longest traceback stored per attempt (UTF-8 bytes); a longer one keeps its end."""


class JobState(enum.StrEnum):
    """The six states a job can be in. ``completed``, ``dead`` and ``cancelled`` are final;
    ``waiting`` is a job enqueued with ``after=[...]`` whose parents have not all finished."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self.value in TERMINAL_STATES


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds (as stored) to an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_timestamp(value: datetime) -> float:
    """An aware datetime to epoch seconds; a naive one is refused (ambiguous)."""
    if value.tzinfo is None:
        raise InvalidPayload("datetimes must be timezone-aware (UTC); got a naive datetime")
    return value.timestamp()


_EPOCH = 0.0
_YEAR_9000 = datetime(9000, 1, 1, tzinfo=UTC).timestamp()


class PayloadText(str):
    """A payload as the JSON text it is stored as, not read yet.

    A backend builds each :class:`Job` it reads with its payload as this text; the job reads
    it on the first access of ``job.payload``. So a job whose handler runs in another process
    crosses to it as this text (:attr:`Job.payload_text`) and is read there: the leasing
    process neither parses the payload nor pickles the parsed objects.
    """

    __slots__ = ()

    def parse(self) -> JSON:
        """The payload itself."""
        value: JSON = jsonio.loads(self)
        return value


def dump_payload(payload: object, *, parsed: bool = False) -> str:
    """Serialise a payload to compact JSON, or raise InvalidPayload saying why.

    ``parsed``: the payload is data as :func:`forebay.jsonio.loads` read it (so it needs no
    checks), encoded by the fast path.
    """
    try:
        return jsonio.dumps(payload) if parsed else jsonio.dumps_strict(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(f"payload must be JSON-serialisable: {exc}") from None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. Build it with :meth:`create`, which validates every field."""

    queue: str
    payload_json: str
    payload: JSON = field(compare=False, repr=False, default=None)
    key: str | None = None
    priority: int = 0
    run_at: float | None = None  # epoch seconds; None means now
    run_id: str | None = None
    max_attempts: int | None = None
    """This job's own limit of error attempts (None: its queue's)."""
    timeout_s: float | None = None
    """This job's own time limit per run (None: its queue's)."""
    after: tuple[int, ...] = ()
    """The jobs this one waits for (``waiting`` until they finished; see ``after_policy``)."""
    after_policy: str = "completed"
    """``completed``: run once every parent completed, cancelled if one ends dead or
    cancelled; ``always``: run once every parent finished, however it ended."""
    webhook: str | None = None
    """A URL that gets this job's final state, signed (see docs/webhooks.md)."""
    parent_id: int | None = None
    """The running job whose handler enqueued this one into a run (``job.enqueue``): it may
    join that run even once the run is sealed."""
    tenant: str | None = None
    """Whose job this is (API tokens bound to a tenant see only its jobs; see
    docs/flow-control.md)."""
    rate_key: str | None = None
    """The key of its queue's ``rate_limit_per_key`` (see :mod:`forebay.flow`)."""
    concurrency_key: str | None = None
    """The key of its queue's ``concurrency_per_key``."""
    fair_key: str | None = None
    """The key fair leasing takes turns over (its queue's ``fair_key``)."""
    traceparent: str | None = None
    """The W3C ``traceparent`` of the trace its enqueue was part of (see docs/tracing.md)."""

    @classmethod
    def create(
        cls,
        queue: str,
        payload: object,
        *,
        key: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        run: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        after: Sequence[int] = (),
        after_policy: str = "completed",
        webhook: str | None = None,
        parent_id: int | None = None,
        tenant: str | None = None,
        rate_key: str | int | None = None,
        concurrency_key: str | int | None = None,
        fair_key: str | int | None = None,
        traceparent: str | None = None,
        parsed: bool = False,
    ) -> NewJob:
        """A validated job. ``payload`` is JSON-ready data or a pydantic model instance (kept
        as its ``model_dump(mode="json")``). ``parsed=True`` says ``payload`` is data as
        forebay read it from JSON text (:func:`forebay.jsonio.loads`), which is encoded without
        the checks an arbitrary Python value needs (the intake's bodies are).

        ``run``: the id of the run the job joins; ``after``: ids of the jobs it waits for
        (``after_policy``: ``completed`` or ``always``); ``webhook``: a URL that gets its final
        state; ``parent_id``: the running job that enqueues it (set by :meth:`Job.enqueue`).
        ``tenant``, ``rate_key``, ``concurrency_key``, ``fair_key``: see :mod:`forebay.flow`."""
        validate_queue_name(queue)
        tenant = check_tenant(tenant)
        rate_key = check_key("rate_key", rate_key)
        concurrency_key = check_key("concurrency_key", concurrency_key)
        fair_key = check_key("fair_key", fair_key)
        traceparent = check_traceparent(traceparent)
        _check_names(key, run)
        parents = _check_links(after, after_policy, webhook, parent_id)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidPayload("priority must be an integer")
        if not -(2**31) <= priority < 2**31:
            raise InvalidPayload("priority must fit in 32 bits")
        if run_at is not None and delay is not None:
            raise InvalidPayload("give run_at or delay, not both")
        ts: float | None = None
        if run_at is not None:
            ts = to_timestamp(run_at)
            if not _EPOCH <= ts < _YEAR_9000:
                raise InvalidPayload("run_at must be between 1970 and 9000")
        elif delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            if not math.isfinite(seconds) or seconds < 0:
                raise InvalidPayload("delay must be a finite, non-negative duration")
            ts = utcnow().timestamp() + seconds if seconds else None
            if ts is not None and ts >= _YEAR_9000:
                raise InvalidPayload("delay reaches past the year 9000")
        if max_attempts is not None or timeout_s is not None:
            check_overrides(max_attempts, timeout_s)
        try:
            text = dump_payload(payload, parsed=parsed)
        except InvalidPayload:
            if not _is_model(payload):
                raise
            payload = payload.model_dump(mode="json")  # type: ignore[attr-defined]
            text = dump_payload(payload)
        return cls(
            queue,
            text,
            cast(JSON, payload),
            key,
            priority,
            ts,
            run,
            max_attempts,
            None if timeout_s is None else float(timeout_s),
            parents,
            after_policy,
            webhook,
            parent_id,
            tenant,
            rate_key,
            concurrency_key,
            fair_key,
            traceparent,
        )

    def stored_as(
        self, job_id: int, created_at: datetime, state: JobState = JobState.QUEUED
    ) -> Job:
        """The Job this became once a backend stored it with ``job_id`` (``state``: queued,
        or waiting for its parents, or cancelled when a parent already failed)."""
        return Job(
            id=job_id,
            queue=self.queue,
            payload=self.payload,
            state=state,
            key=self.key,
            priority=self.priority,
            run_at=created_at if self.run_at is None else to_datetime(self.run_at),
            created_at=created_at,
            updated_at=created_at,
            run_id=self.run_id,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            after=self.after,
            after_policy=self.after_policy,
            webhook=self.webhook,
            parent_id=self.parent_id,
            tenant=self.tenant,
            rate_key=self.rate_key,
            concurrency_key=self.concurrency_key,
            fair_key=self.fair_key,
            traceparent=self.traceparent,
        )


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def check_traceparent(value: str | None) -> str | None:
    """``value`` if it is a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``, lower-case
    hex, ids not all zero), else InvalidPayload; None stays None."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or _TRACEPARENT.fullmatch(value) is None
        or value.startswith("ff")
        or value[3:35] == "0" * 32
        or value[36:52] == "0" * 16
    ):
        raise InvalidPayload(
            "traceparent must be a W3C trace context: 00-<32 hex trace id>-<16 hex span id>-"
            "<2 hex flags>"
        )
    return value


MAX_ATTEMPTS_LIMIT = 1000
"""The most error attempts one job may be given at enqueue."""
TIMEOUT_S_LIMIT = 7 * 24 * 3600.0
"""The longest ``timeout_s`` one job may be given at enqueue (a week)."""


def check_overrides(max_attempts: object, timeout_s: object) -> None:
    """Raise InvalidPayload unless a job's own ``max_attempts`` / ``timeout_s`` (None: not
    given) are a whole number in 1..1000 and a finite number of seconds in (0, one week]."""
    if max_attempts is not None and (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidPayload(
            f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT} "
            f"(got {max_attempts!r})"
        )
    if timeout_s is not None and (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or not 0 < timeout_s <= TIMEOUT_S_LIMIT
    ):
        raise InvalidPayload(
            f"timeout_s must be a finite number of seconds above 0 and at most "
            f"{TIMEOUT_S_LIMIT:g} (a week) (got {timeout_s!r})"
        )


def _is_model(value: object) -> bool:
    """Whether ``value`` is a pydantic model instance (without importing pydantic)."""
    return hasattr(type(value), "__pydantic_serializer__") and hasattr(value, "model_dump")


def _check_names(key: str | None, run_id: str | None) -> None:
    if key is not None:
        validate_key(key)
    if run_id is not None:
        if not isinstance(run_id, str) or not run_id or len(run_id) > 256:
            raise InvalidPayload("run must be a run id (a non-empty string)")
        check_storable("run", run_id)


AFTER_POLICIES: Final = ("completed", "always")
"""``after_policy``: run once every parent completed (a parent dead or cancelled cancels the
job), or once every parent finished, however it ended."""

MAX_PARENTS: Final = 100
"""The most parents one job may wait for."""


def _check_links(
    after: Sequence[int], policy: str, webhook: str | None, parent_id: int | None
) -> tuple[int, ...]:
    """Refuse (InvalidPayload) bad ``after``/``after_policy``/``webhook``/``parent_id``; return
    the parents as a sorted tuple without repeats."""
    if webhook is not None:
        check_webhook_url(webhook)
    if parent_id is not None and (isinstance(parent_id, bool) or not isinstance(parent_id, int)):
        raise InvalidPayload("parent_id must be a job id")
    if policy not in AFTER_POLICIES:
        raise InvalidPayload(f"after_policy must be 'completed' or 'always' (got {policy!r})")
    if not after:
        return ()
    if isinstance(after, str | bytes) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in after
    ):
        raise InvalidPayload("after must be a list of job ids")
    parents = tuple(sorted(set(after)))
    if len(parents) > MAX_PARENTS:
        raise InvalidPayload(f"a job may wait for at most {MAX_PARENTS} parents")
    return parents


def check_webhook_url(url: object) -> str:
    """Refuse (InvalidPayload) what cannot be a webhook URL: it must be an absolute http(s) URL
    of at most 2048 characters. Whether its host may be reached is checked at delivery (a
    private or loopback address is refused there unless the settings allow it)."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise InvalidPayload("webhook must be an http(s) URL of at most 2048 characters")
    check_storable("webhook", url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidPayload(f"webhook is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidPayload(f"webhook must be an absolute http:// or https:// URL (got {url!r})")
    return url


def validate_key(key: str) -> None:
    """Refuse (InvalidPayload) what cannot be an idempotency key."""
    if not isinstance(key, str) or not key or len(key) > 512:
        raise InvalidPayload("key must be a non-empty string of at most 512 characters")
    check_storable("key", key)


def validate_queue_name(queue: str) -> None:
    if not isinstance(queue, str):
        raise InvalidPayload("queue name must be a string")
    _validate_queue_name(queue)


@lru_cache(maxsize=1024)
def _validate_queue_name(queue: str) -> None:
    if not queue or len(queue) > 128:
        raise InvalidPayload("queue name must be a non-empty string of at most 128 characters")
    if not all(c.isalnum() or c in "-_.:" for c in queue):
        raise InvalidPayload(f"queue name {queue!r} may only contain letters, digits and - _ . :")


ProgressReporter: TypeAlias = Callable[["Job", float, "str | None"], Awaitable[None]]

Enqueuer: TypeAlias = Callable[[list[NewJob]], Awaitable[list["Job"]]]
"""Stores jobs as ``app.enqueue_many`` does: what :meth:`Job.enqueue` calls."""

# Set by the worker (and by a handler process) for its handlers, so job.enqueue() stores the
# jobs through the app that runs them.
job_enqueuer: ContextVar[Enqueuer | None] = ContextVar("forebay_job_enqueuer", default=None)

# Set by the worker inside each handler's task, so job.progress() reaches the right backend.
progress_reporter: ContextVar[ProgressReporter | None] = ContextVar(
    "forebay_progress_reporter", default=None
)


@dataclass(slots=True)
class Job:
    """A job as stored. Handlers receive one (with :meth:`progress` usable while it runs).

    Treat it as read-only (derive a changed copy with ``dataclasses.replace``); it is not frozen
    only because frozen dataclasses cost several times more to build, and workers build one per
    job on the hot path.

    A job read from a backend holds its payload as the stored JSON text (a
    :class:`PayloadText`) and parses it on the first access of :attr:`payload`: a worker that
    never looks at a payload (it hands the job to a handler process) never parses it.

    On a queue with a payload model, :attr:`payload` is an instance of that model in the
    process that runs the handler (see :mod:`forebay.payloads`; :meth:`payload_as` types it).
    """

    id: int
    queue: str
    payload: JSON
    state: JobState
    key: str | None = None
    priority: int = 0
    attempt: int = 0
    deliveries: int = 0
    defers: int = 0
    run_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    progress_pct: float | None = None
    progress_message: str | None = None
    error: str | None = None
    error_type: str | None = None
    run_id: str | None = None
    started_at: datetime | None = None
    """When the current (or last) attempt was leased."""
    result: JSON = None
    """What the handler returned, as JSON (None: nothing, or not finished)."""
    errors: tuple[AttemptError, ...] = ()
    """The errors of the last :data:`MAX_ERRORS_KEPT` failed attempts, oldest first."""
    max_attempts: int | None = None
    """The job's own limit of error attempts, given at enqueue (None: its queue's)."""
    timeout_s: float | None = None
    """The job's own time limit per run, given at enqueue (None: its queue's)."""
    after: tuple[int, ...] = ()
    """The jobs this one waited (or waits) for, given at enqueue."""
    after_policy: str = "completed"
    """When a waiting job runs: ``completed`` (every parent completed) or ``always``."""
    webhook: str | None = None
    """The URL that gets this job's final state."""
    parent_id: int | None = None
    """The job whose handler enqueued this one into a run (:meth:`enqueue`), if one did."""
    tenant: str | None = None
    """Whose job this is (see docs/flow-control.md)."""
    rate_key: str | None = None
    """Its key for its queue's per-key rate limit, worked out at enqueue."""
    concurrency_key: str | None = None
    """Its key for its queue's per-key concurrency cap, worked out at enqueue."""
    fair_key: str | None = None
    """Its key for fair leasing, worked out at enqueue."""
    traceparent: str | None = None
    """The W3C ``traceparent`` of the trace that enqueued it (None: none was active)."""
    created: bool = True
    """False when enqueue found an existing job with the same (queue, key)."""
    cancel_requested: bool = False
    """Set by the worker while the handler runs, once an operator cancelled this job: a plain
    ``def`` handler (run in a thread, which cannot be interrupted) polls it and returns early.
    An ``async def`` handler is cancelled instead; one in a handler process is terminated."""

    async def progress(self, pct: float, message: str | None = None) -> None:
        """Record progress (0–100) and a short message, visible in status while the job runs."""
        reporter = progress_reporter.get()
        if reporter is None or self.lease_token is None:
            raise RuntimeError("job.progress() works only inside a running handler")
        if not 0 <= pct <= 100:
            raise ValueError("progress must be between 0 and 100")
        await reporter(self, float(pct), None if message is None else storable_text(message))

    async def enqueue(self, queue: str, payload: object, **options: Any) -> Job:
        """Inside a running handler: enqueue a job that joins this job's run (pass
        ``run=None`` to keep it out of the run, or another run's id), with this job as its
        ``parent_id`` when it joins a run. Takes the options of :meth:`forebay.Forebay.enqueue`
        but ``connection``. A sealed run still accepts these jobs: the run cannot complete
        while this job runs, so the total grows before it could be counted complete. A job
        that joins no run is enqueued as ``app.enqueue`` would (no link, no extra cost).
        The job belongs to this job's ``tenant`` unless given another (``tenant=None``: none)."""
        enqueuer = job_enqueuer.get()
        if enqueuer is None or self.lease_token is None:
            raise RuntimeError("job.enqueue() works only inside a running handler")
        options.setdefault("run", self.run_id)
        options.setdefault("tenant", self.tenant)
        parent = None if options["run"] is None else self.id
        new = NewJob.create(queue, payload, parent_id=parent, **options)
        return (await enqueuer([new]))[0]

    def is_stalled(self, now: datetime | None = None) -> bool:
        """Running with an expired lease (the glossary's *stalled*): its worker died or hangs,
        and the job runs again once a worker reclaims it. A view, not a stored state."""
        return (
            self.state is JobState.RUNNING
            and self.lease_expires_at is not None
            and self.lease_expires_at < (now or utcnow())
        )

    def display_state(self, now: datetime | None = None) -> str:
        """The state to show a person: ``stalled`` for a stalled job, else the state."""
        return "stalled" if self.is_stalled(now) else str(self.state)

    @property
    def lease(self) -> Lease:
        if self.lease_token is None:
            raise RuntimeError(f"job {self.id} is not leased")
        return Lease(self.id, self.lease_token)

    @property
    def payload_text(self) -> str:
        """The payload as JSON text: the stored text while :attr:`payload` was not read, else
        the payload encoded again."""
        value = _stored_payload(self)
        return value if type(value) is PayloadText else jsonio.dumps(_json_payload(value))

    def payload_as(self, model: type[M]) -> M:
        """The payload as an instance of the pydantic ``model``, typed as one.

        Inside the handler of a queue declared with ``payload=model``, :attr:`payload` already
        is that instance (this returns it); elsewhere (an ``on_exhausted`` hook, a job read
        with ``app.get_job``) the payload is parsed with ``model`` (pydantic's
        ``ValidationError`` if it does not match).
        """
        value = _stored_payload(self)
        if isinstance(value, model):
            return value
        return model.model_validate_json(self.payload_text)

    def __getstate__(self) -> dict[str, object]:
        # Pickled as stored: a payload (result, errors) not read yet crosses to another
        # process as its text.
        state = {name: getattr(self, name) for name in _JOB_FIELDS if name not in _LAZY}
        for name, slot in _LAZY.items():
            state[name] = slot.__get__(self)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def to_dict(self, *, detail: bool = True) -> dict[str, JSON]:
        """A JSON-ready view of the job (datetimes as ISO 8601). ``detail=False`` leaves out
        the result and the errors history (for listings of many jobs)."""

        def iso(d: datetime | None) -> str | None:
            return None if d is None else d.isoformat()

        out: dict[str, JSON] = {
            "id": self.id,
            "queue": self.queue,
            "state": str(self.state),
            "key": self.key,
            "priority": self.priority,
            "attempt": self.attempt,
            "deliveries": self.deliveries,
            "defers": self.defers,
            "run_at": iso(self.run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "finished_at": iso(self.finished_at),
            "lease_expires_at": iso(self.lease_expires_at),
            "worker_id": self.worker_id,
            "progress": self.progress_pct,
            "progress_message": self.progress_message,
            "error": self.error,
            "error_type": self.error_type,
            "run_id": self.run_id,
            "started_at": iso(self.started_at),
            "max_attempts": self.max_attempts,
            "timeout_s": self.timeout_s,
            "after": list(self.after),
            "after_policy": self.after_policy,
            "webhook": self.webhook,
            "parent_id": self.parent_id,
            "tenant": self.tenant,
            "rate_key": self.rate_key,
            "concurrency_key": self.concurrency_key,
            "fair_key": self.fair_key,
            "traceparent": self.traceparent,
            "payload": _json_payload(self.payload),
            "stalled": self.is_stalled(),
        }
        if detail:
            out["result"] = self.result
            out["errors"] = [e.to_dict() for e in self.errors]
        return out


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_payload_slot: MemberDescriptorType = Job.__dict__["payload"]  # read and written as stored
_stored_payload: Callable[[Job], JSON] = _payload_slot.__get__
_store_payload: Callable[[Job, JSON], None] = _payload_slot.__set__
_result_slot: MemberDescriptorType = Job.__dict__["result"]
_errors_slot: MemberDescriptorType = Job.__dict__["errors"]
_LAZY: dict[str, MemberDescriptorType] = {
    "payload": _payload_slot,
    "result": _result_slot,
    "errors": _errors_slot,
}


def _json_payload(value: object) -> JSON:
    """A payload as JSON data: a model instance (inside its queue's handler) as its JSON."""
    if type(value) in _JSON_TYPES or not _is_model(value):
        return cast(JSON, value)
    data: JSON = value.model_dump(mode="json")  # type: ignore[attr-defined]
    return data


_JSON_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})


def _read_payload(job: Job) -> JSON:
    value = _stored_payload(job)
    if type(value) is PayloadText:
        # Parsed once, on first access. Two threads reading at once both parse it and store
        # equal values: harmless, so no lock on the hot path.
        value = jsonio.loads(value)
        _store_payload(job, value)
    return value


# ``job.payload``: the slot behind a property that parses stored text on first access (see
# Job's docstring). Installed after the class is built, since a slots dataclass makes its own
# slot descriptor for each field; assigning keeps the slot's own fast setter.
setattr(Job, "payload", property(_read_payload, _store_payload, doc="The payload."))  # noqa: B010


class StoredText(str):
    """A job's result or errors history as the JSON text it is stored as, not read yet: read
    on first access, as its payload is (see :class:`PayloadText`)."""

    __slots__ = ()


def _read_result(job: Job) -> JSON:
    value: JSON = _result_slot.__get__(job)
    if type(value) is StoredText:
        value = jsonio.loads(value)
        _result_slot.__set__(job, value)
    return value


def _read_errors(job: Job) -> tuple[AttemptError, ...]:
    value = _errors_slot.__get__(job)
    if type(value) is StoredText:
        value = tuple(AttemptError.from_dict(e) for e in jsonio.loads(value))
        _errors_slot.__set__(job, value)
    return cast("tuple[AttemptError, ...]", value)


# ``job.result`` and ``job.errors``: read from their stored text on first access, like the
# payload (a leased job's history is read only by whoever looks at it).
setattr(Job, "result", property(_read_result, _result_slot.__set__, doc="The result."))  # noqa: B010
setattr(Job, "errors", property(_read_errors, _errors_slot.__set__, doc="The errors."))  # noqa: B010


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The error of one failed attempt, as kept in :attr:`Job.errors`."""

    attempt: int
    at: datetime
    type: str
    message: str
    traceback: str | None = None
    """Where it was raised (Python's traceback text), at most :data:`MAX_TRACEBACK_BYTES`."""

    @classmethod
    def from_dict(cls, entry: dict[str, JSON]) -> AttemptError:
        """An entry as the job stores spell it: ``at`` in epoch seconds."""
        at = entry.get("at")
        traceback = entry.get("traceback")
        return cls(
            attempt=int(cast(int, entry.get("attempt") or 0)),
            at=datetime.fromtimestamp(float(cast(float, at or 0)), UTC),
            type=str(entry.get("type") or ""),
            message=str(entry.get("message") or ""),
            traceback=None if traceback is None else str(traceback),
        )

    def to_dict(self) -> dict[str, JSON]:
        return {
            "attempt": self.attempt,
            "at": self.at.isoformat(),
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
        }


def cap_traceback(text: str | None) -> str | None:
    """``text`` as stored: storable (see :func:`storable_text`) and at most
    :data:`MAX_TRACEBACK_BYTES`, keeping its end (the frame that raised, and the error)."""
    if text is None:
        return None
    text = storable_text(text)
    if len(text) <= MAX_TRACEBACK_BYTES // 4:  # 4 bytes per character at most: short enough
        return text
    data = text.encode()
    if len(data) <= MAX_TRACEBACK_BYTES:
        return text
    marker = "[{} bytes cut from the start]\n"
    keep = MAX_TRACEBACK_BYTES - len(marker.format(len(data))) - 1
    tail = data[-keep:].decode("utf-8", "ignore")
    return marker.format(len(data) - len(tail.encode())) + tail


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on a running job: only the holder of the current token may settle it."""

    job_id: int
    token: str


def storable_text(text: str) -> str:
    """``text`` as every backend can store it: lone surrogates (what Python makes of bytes
    that are not UTF-8, e.g. a file name read with ``os.fsdecode``) and NUL characters (which
    PostgreSQL text cannot hold) written as backslash escapes; anything else unchanged.

    Texts that describe what happened (error messages, progress messages, defer reasons) go
    through this where they are described, so that an odd character in one job's error can
    never keep that job, or the others written with it, from being settled.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def check_storable(name: str, text: str) -> None:
    """Refuse (InvalidPayload) a producer's text that some backend could not store as given:
    a lone surrogate or a NUL character. Identifying texts (keys) are refused rather than
    escaped, since an escaped key would no longer be the producer's key."""
    if "\x00" in text:
        raise InvalidPayload(f"{name} must not contain a NUL character (\\x00)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayload(
            f"{name} must be valid Unicode text: it holds a lone surrogate "
            f"({text.encode('utf-8', 'backslashreplace').decode()!r}); decode bytes with "
            "errors='replace' or pass a different key"
        ) from None


def _make_storable(value: object, *names: str) -> None:
    """Pass a frozen value's text fields through :func:`storable_text` as it is built."""
    for name in names:
        object.__setattr__(value, name, storable_text(getattr(value, name)))


@dataclass(frozen=True, slots=True)
class Completion:
    """Complete a running job, storing ``result_json`` (the handler's return value as JSON
    text; None: it returned nothing). A plain :class:`Lease` completes with no result."""

    lease: Lease
    result_json: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Put a running job back to ``queued`` to run at ``run_at`` (the attempt stays spent).

    The error is kept as the job's last error and appended to its errors history with the
    ``traceback`` (capped at :data:`MAX_TRACEBACK_BYTES`).
    """

    lease: Lease
    run_at: float
    error: str
    error_type: str
    traceback: str | None = None

    def __post_init__(self) -> None:
        _make_storable(self, "error", "error_type")
        object.__setattr__(self, "traceback", cap_traceback(self.traceback))


@dataclass(frozen=True, slots=True)
class Failure:
    """Dead-letter a running job (its error kept as :class:`Retry` keeps it)."""

    lease: Lease
    error: str
    error_type: str
    traceback: str | None = None

    def __post_init__(self) -> None:
        _make_storable(self, "error", "error_type")
        object.__setattr__(self, "traceback", cap_traceback(self.traceback))


@dataclass(frozen=True, slots=True)
class Deferral:
    """Put a running job back without spending an attempt."""

    lease: Lease
    run_at: float
    reason: str

    def __post_init__(self) -> None:
        _make_storable(self, "reason")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing, replay or purge applies to. Every field narrows the match."""

    queue: str | None = None
    state: JobState | None = None
    error_type: str | None = None
    since: datetime | None = None  # updated_at >= since
    until: datetime | None = None  # updated_at < until
    run_id: str | None = None
    ids: tuple[int, ...] | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        # The same answer on every backend: PostgreSQL cannot even compare such a text.
        for name in ("queue", "error_type", "run_id", "tenant"):
            value = getattr(self, name)
            if value is not None:
                check_storable(name, value)


@dataclass(frozen=True, slots=True)
class DeadCursor:
    """Where a page of dead jobs (newest death first) ended: the last job's death and id.

    The next page holds the dead jobs that died earlier, or at the same time with a smaller id.
    Build it from the last job of a page with :meth:`after`.
    """

    finished_at: datetime
    id: int

    @classmethod
    def after(cls, job: Job) -> DeadCursor:
        if job.finished_at is None:
            raise ValueError(f"job {job.id} has not finished: it is not dead")
        return cls(finished_at=job.finished_at, id=job.id)

    @property
    def micros(self) -> int:
        """The death time in whole microseconds since the epoch (the precision of a Job's)."""
        return (self.finished_at - _EPOCH_TIME) // timedelta(microseconds=1)


_EPOCH_TIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Counts of one queue's jobs per state, and the age of its oldest due job."""

    queue: str
    queued: int = 0
    running: int = 0
    completed: int = 0
    dead: int = 0
    cancelled: int = 0
    scheduled: int = 0  # queued with run_at in the future
    retrying: int = 0  # queued after an error
    oldest_queued_age_s: float | None = None
    stalled: int = 0  # running with an expired lease: its worker is gone or stuck
    waiting: int = 0  # waiting for their parents (after=[...])
    throttled: int = 0  # due, queued, and held back by a flow limit (rate or cap) right now

    @property
    def depth(self) -> int:
        """Jobs not finished: what ``max_depth`` bounds."""
        return self.waiting + self.queued + self.running

    def to_dict(self) -> dict[str, JSON]:
        return {
            "queue": self.queue,
            "queued": self.queued,
            "running": self.running,
            "completed": self.completed,
            "dead": self.dead,
            "cancelled": self.cancelled,
            "scheduled": self.scheduled,
            "retrying": self.retrying,
            "oldest_queued_age_s": self.oldest_queued_age_s,
            "stalled": self.stalled,
            "waiting": self.waiting,
            "throttled": self.throttled,
        }
