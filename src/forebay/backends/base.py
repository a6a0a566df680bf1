"""The backend seam: the one interface every job store implements.

Why the cut is here: the delivery promise (DESIGN §3) must hold the same on SQLite, PostgreSQL
and Redis, so everything engine-specific (SQL, Lua, locking, wake-ups) lives behind this
Protocol and everything about *policy* (when to retry, how long to back off, when a job is a
crash-looping poison) lives in the worker above it. A backend only moves jobs between states,
one method per transition, batch-first, and answers questions about them. The contract suite in
``tests/contract/`` is the executable definition of this interface.

Rules every implementation follows:

* Every method is keyword-only after the batch argument, and batch-first: one call settles
  many jobs in one transaction / pipeline.
* Transitions out of ``running`` take :class:`~forebay.job.Lease` values and apply only when the
  token still matches; the ids whose token did not match are returned ("refused"), never raised.
* Times are epoch seconds (``float``) at this seam; the public API speaks ``datetime``.
* Engine errors are translated into :class:`~forebay.errors.BackendError` at the boundary.
* Jobs read from the store are built by :func:`forebay.backends.rows.job_from_row`, so they
  are alike whatever the engine; their payload is parsed when first read.

Callers use only what is declared here: a member one backend has and the Protocol does not
is not part of the seam.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

from forebay.errors import ConfigError
from forebay.fleet import QueueTotals, Throughput, WorkerInfo
from forebay.flow import FlowLimits
from forebay.job import (
    Completion,
    DeadCursor,
    Deferral,
    Failure,
    Job,
    JobFilter,
    Lease,
    NewJob,
    QueueCounts,
    Retry,
)
from forebay.queue_settings import KEEP, Keep, QueueSettings
from forebay.runs import NewRun, Run, RunState
from forebay.schedules import Firing, Schedule

__all__ = [
    "Backend",
    "Capabilities",
    "Leased",
    "PruneSpec",
    "refuse_connection",
    "split_completions",
]


class Leased(list[Job]):
    """The jobs one lease took, in order; ``throttled_until``: when a rate limit frees a token
    for due jobs the lease held back (None: none held back by a rate)."""

    __slots__ = ("throttled_until",)

    def __init__(self, jobs: Sequence[Job] = (), throttled_until: float | None = None) -> None:
        super().__init__(jobs)
        self.throttled_until = throttled_until


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What differs between engines, said explicitly instead of behaving differently."""

    name: str
    cross_process_wakeup: bool
    """An enqueue in one process wakes idle workers in another at once (else: polling)."""
    transactional_enqueue: bool
    """``enqueue(..., connection=conn)`` joins the caller's own database transaction."""
    cross_process_finish_wakeup: bool = False
    """A job finished by another process wakes :meth:`Backend.wait_for_finish` at once (else:
    the waiter notices within a short poll interval; in its own process it is woken at once)."""


def refuse_connection(capabilities: Capabilities, connection: object | None) -> None:
    """Raise ConfigError when a caller's connection is given to a backend that cannot join it."""
    if connection is not None and not capabilities.transactional_enqueue:
        raise ConfigError(
            f"the {capabilities.name} backend cannot join your transaction (connection=...); "
            "use the postgres backend for transactional enqueue"
        )


def split_completions(
    completions: Sequence[Lease | Completion],
) -> tuple[list[Lease], list[Completion]]:
    """The completions that store no result (as leases), and those that store one."""
    plain: list[Lease] = []
    results: list[Completion] = []
    for c in completions:
        if isinstance(c, Lease):
            plain.append(c)
        elif c.result_json is None:
            plain.append(c.lease)
        else:
            results.append(c)
    return plain, results


@dataclass(frozen=True, slots=True)
class PruneSpec:
    """Delete finished jobs whose ``finished_at`` is older than these cut-offs (epoch seconds).

    ``queue``: only that queue's jobs; else every queue's but those in ``other_than`` (queues
    that keep their jobs for their own time, pruned by a spec of their own).
    """

    completed_before: float
    dead_before: float
    cancelled_before: float
    limit: int = 10_000
    queue: str | None = None
    other_than: tuple[str, ...] = ()
    runs_before: float | None = None
    """Also delete completed runs whose ``completed_at`` is older (None: keep runs). Their
    jobs are pruned by the cut-offs above, as any job."""
    throughput_before: float | None = None
    """Also delete the per-minute counts of minutes that start before this (None: keep them);
    the totals are never deleted (see :mod:`forebay.fleet`)."""


@runtime_checkable
class Backend(Protocol):
    """A job store. See the module docstring for the rules."""

    capabilities: Capabilities

    applied_on_open: list[str]
    """The migrations the last :meth:`open` applied (``forebay migrate`` reports them)."""

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Build (not open) the backend a URL of its scheme names; ConfigError for a bad one."""
        ...

    async def open(self) -> None:
        """Connect, and create or upgrade the schema if it is missing. Idempotent."""

    async def close(self) -> None:
        """Flush pending writes and disconnect. Idempotent."""

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names of those applied."""

    def migration_sql(self) -> str:
        """The SQL :meth:`migrate` runs on an empty store, for review (``forebay migrate
        --sql``), made without connecting; ConfigError when the store keeps no SQL schema."""
        ...

    async def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""

    async def drop_everything(self) -> None:
        """Delete every job and all else this backend stored (tables, schema or keys).

        A reset, for demos and for isolating tests from each other; nothing in forebay calls
        it. The store is then as if it was never opened: call :meth:`close` next (or
        :meth:`migrate` to start again with an empty store).
        """

    # -- enqueue ---------------------------------------------------------------------------
    async def enqueue(
        self,
        jobs: Sequence[NewJob],
        *,
        max_depth: dict[str, int] | None = None,
        tenant_max_depth: dict[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Job]:
        """Store jobs durably; return one Job per input, in order.

        ``connection`` (only where ``capabilities.transactional_enqueue``): the caller's own
        database connection, inside a transaction the caller commits or rolls back; the jobs
        exist if and only if that transaction commits. Other backends raise ConfigError.

        A job whose (queue, key) already exists is not stored again: the existing job is
        returned with ``created=False``. If a queue named in ``max_depth`` would hold more than
        that many unfinished jobs, the whole call is refused with QueueFull and nothing is stored.
        Likewise a tenant named in ``tenant_max_depth`` (its unfinished jobs in every queue):
        TenantQuotaFull. A job's ``tenant`` and flow keys are stored as given.

        In the same transaction, and refusing the whole call (nothing stored) otherwise:

        * ``run_id``: the run must exist (else UnknownRun) and be open, unless the job's
          ``parent_id`` is a running job of that run (else RunSealed); the run's ``total``
          (and ``queued`` / ``waiting``) grow by one per job stored (not per key found).
        * ``after``: every parent must exist (else UnknownParent). The job is stored
          ``waiting`` while a parent is unfinished; ``queued`` when every parent completed
          (with ``after_policy="always"``: finished); ``cancelled`` at once when a parent is
          dead or cancelled and the policy is ``completed`` (error_type ``DependencyFailed``,
          error ``parent job <id> ended <state>``), which counts as a finish (run counts,
          webhook, its own waiting children: see :meth:`complete`).
        """

    # -- running ---------------------------------------------------------------------------
    async def lease(
        self,
        *,
        queue: str,
        limit: int,
        worker_id: str,
        lease_s: float,
        now: float | None = None,
    ) -> Leased:
        """Move up to ``limit`` due jobs of ``queue`` to running, best first; return them.

        Order: higher priority, then earlier run_at, then enqueue order. Each returned job has a
        fresh ``lease_token``, its ``attempt`` and ``deliveries`` incremented, ``started_at``
        set to now. Its payload is read on first access (a handler process gets it as text:
        ``job.payload_text``).

        When the queue's stored settings have flow limits (``QueueSettings.limits``), the lease
        obeys them as :mod:`forebay.flow` says (its :func:`~forebay.flow.plan`), in the same
        transaction or script: the jobs held back stay queued, untouched, and the result's
        ``throttled_until`` says when a rate frees a token for them.

        ``now`` (tests): the time the lease takes as now (due jobs, rates, aging, lease expiry);
        None: the store's clock.
        """

    async def extend(self, leases: Sequence[Lease], *, lease_s: float) -> list[int]:
        """Push the lease expiry of running jobs to now + lease_s; return ids refused."""

    async def progress(self, lease: Lease, *, pct: float, message: str | None) -> bool:
        """Record progress on a running job; False if the lease is no longer held."""

    async def complete(self, completions: Sequence[Lease | Completion]) -> list[int]:
        """running -> completed, storing each :class:`~forebay.job.Completion`'s result (a
        plain Lease: no result) and clearing the last error (the history keeps it); return
        ids refused (stale token).

        Every transition into a finished state — here, :meth:`dead_letter`, :meth:`cancel`,
        :meth:`cancel_where`, a crash-limit dead letter, a waiting job cancelled for its
        parent — does, in its own transaction / script: the job's run counts (and the run's
        completion, see :mod:`forebay.runs`); a delivery job on ``forebay.webhooks`` when the
        job has a ``webhook``; its waiting children released (queued once all parents are
        done) or cancelled (and so on down), as :meth:`enqueue` describes."""

    async def retry(self, retries: Sequence[Retry]) -> list[int]:
        """running -> queued at run_at, attempt kept spent, the error kept as the last one and
        appended to the errors history (the last ten); return ids refused."""

    async def dead_letter(self, failures: Sequence[Failure]) -> list[int]:
        """running -> dead, the error kept as :meth:`retry` keeps it; return ids refused."""

    async def defer(self, deferrals: Sequence[Deferral]) -> list[int]:
        """running -> queued at run_at, giving back the attempt and delivery; return ids refused."""

    async def release(self, leases: Sequence[Lease]) -> list[int]:
        """running -> queued now, giving back the attempt and delivery; return ids refused."""

    async def reclaim_expired(self, *, now: float | None = None) -> int:
        """running jobs whose lease expired -> queued (attempt given back), error
        ``LeaseExpired`` (also in the history); return how many."""

    # -- operator actions ------------------------------------------------------------------
    async def cancel(self, ids: Sequence[int]) -> list[int]:
        """waiting, queued or running -> cancelled; return the ids that were cancelled.

        A running job's lease is revoked at once: its worker's next heartbeat is refused, so
        it stops the handler, and the worker's late outcome is refused like any stale one.
        """

    async def replay(self, where: JobFilter, *, dry_run: bool = False) -> int:
        """dead -> queued now with counters reset; return how many (would be) replayed. A
        replayed job of a run counts as queued again in it (``dead`` shrinks); a run that
        already completed stays completed (its completion is never emitted twice). Children
        cancelled because it died stay cancelled."""

    async def purge(self, where: JobFilter, *, dry_run: bool = False) -> int:
        """Delete dead jobs that match; return how many (would be) deleted."""

    async def prune(self, spec: PruneSpec) -> int:
        """Delete finished jobs past their retention, at most ``spec.limit``; return how many."""

    # -- reading ---------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        """The job with that id, or None."""

    async def list_jobs(
        self, where: JobFilter, *, limit: int = 100, before_id: int | None = None
    ) -> list[Job]:
        """Jobs matching ``where``, newest first, paged by ``before_id``."""

    async def counts(
        self, *, now: float | None = None, tenant: str | None = None
    ) -> list[QueueCounts]:
        """Counts per queue and state, sorted by queue name. ``throttled``: due queued jobs a
        lease at ``now`` would hold back by the queue's flow limits (all of them while the
        queue's rate has no token or its cap is reached; else those of a blocked key).
        ``tenant``: only that tenant's jobs (``throttled`` then counts its jobs alone)."""

    async def wait_for_work(self, queues: Sequence[str], *, timeout_s: float) -> None:
        """Return when a job may be due on one of ``queues``, or after ``timeout_s``.

        Work committed after the previous call (for the same queues, on this instance) returned
        makes this call return at once: nothing enqueued between a worker's empty lease and its
        next wait is missed. Spurious wake-ups are allowed; the caller simply leases again.
        """

    # -- schedules (DESIGN §10) ------------------------------------------------------------
    async def save_schedules(self, schedules: Sequence[Schedule]) -> None:
        """Store schedules by name: a new one, or a known one's new definition. A known
        schedule keeps its last tick (its ``last_tick`` field here is ignored)."""

    async def list_schedules(self) -> list[Schedule]:
        """Every stored schedule with its last tick, sorted by name."""

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        """Delete schedules (their jobs stay); return the names that existed, sorted."""

    async def fire_schedule(self, firing: Firing) -> bool:
        """In one transaction / script: if the schedule's stored last tick is still
        ``firing.after``, set it to ``firing.tick`` and enqueue ``firing.jobs`` (idempotent by
        (queue, key), never refused by a max_depth); return True. Else (another process
        fired it first, or the schedule is gone) change nothing and return False.

        So a tick is enqueued once however many processes fire it, a crash leaves either
        both changes or neither, and a tick whose job was already pruned is never enqueued
        again: the last tick only moves forward.
        """

    # -- waiting for a job, and finding one by its key -------------------------------------
    async def wait_for_finish(self, job_id: int, *, timeout_s: float) -> Job | None:
        """Return the job once it is finished (completed, dead or cancelled), at once if it
        already is; after ``timeout_s`` (``math.inf``: no limit), return it as it stands.
        None when there is no such job (or it was deleted while waited for).

        Woken by the engine's own notification where it has one (see
        ``capabilities.cross_process_finish_wakeup``), never by a busy loop: every transition
        into a finished state (complete, dead letter, cancel) announces the jobs it finished,
        once per statement or script call, not once per job.
        """

    async def get_job_by_key(self, queue: str, key: str) -> Job | None:
        """The job stored under the idempotency ``key`` on ``queue`` (an index lookup), or None."""

    # -- dead letters by time of death -------------------------------------------------------
    async def list_dead(
        self, where: JobFilter, *, limit: int = 100, before: DeadCursor | None = None
    ) -> list[Job]:
        """Dead jobs matching ``where`` (its state is ignored), the latest death first (ties:
        larger id first), paged by ``before`` (:meth:`DeadCursor.after` the previous page's
        last job)."""

    # -- operator controls: stored queue settings, run-now, cancel by filter ------------------
    async def set_queue(
        self,
        queue: str,
        *,
        paused: bool | None = None,
        max_depth: int | Keep | None = KEEP,
        limits: FlowLimits | Keep = KEEP,
    ) -> QueueSettings:
        """Store ``queue``'s settings (None / KEEP: leave as stored; ``max_depth=None`` clears
        the limit; ``limits=FlowLimits()`` clears the flow limits); return them. Resuming, or
        new limits, wake the workers waiting on the queue."""
        ...

    async def queue_settings(self) -> list[QueueSettings]:
        """Every queue with stored settings, sorted by name."""
        ...

    async def run_now(self, ids: Sequence[int]) -> list[int]:
        """queued jobs due later (scheduled, retry backoff) -> due now; return the ids moved
        (already due ones count as moved; jobs in other states are not)."""
        ...

    async def cancel_where(self, where: JobFilter, *, dry_run: bool = False) -> int:
        """Cancel the queued and running jobs that match (``where.state`` narrows to one of
        those two); return how many were (or, with ``dry_run``, would be) cancelled."""
        ...

    # -- runs (DESIGN §10; see forebay.runs) ----------------------------------------------
    async def start_run(self, run: NewRun) -> Run:
        """Store a new open run with no jobs; return it. With the ``key`` of a stored run,
        store nothing and return that run as it stands (``created=False``)."""
        ...

    async def seal_run(self, run_id: str) -> Run | None:
        """Seal an open run (sealing again changes nothing); return it, None when there is
        no such run. In the same transaction, a run whose jobs all finished (or that has
        none) completes, and its completion jobs are created (see :mod:`forebay.runs`)."""
        ...

    async def get_run(self, run_id: str) -> Run | None:
        """The run with that id and its counts (one consistent snapshot), or None."""
        ...

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        limit: int = 100,
        before_id: str | None = None,
        tenant: str | None = None,
    ) -> list[Run]:
        """Runs, newest first (by id: run ids are time-ordered), paged by ``before_id``;
        ``state`` narrows to one state, ``tenant`` to that tenant's runs."""
        ...

    # -- the fleet (see :mod:`forebay.fleet`) ------------------------------------------------
    async def save_worker(self, worker: WorkerInfo) -> None:
        """Store (insert or replace) a worker's record; it holds until ``worker.last_seen +
        worker.ttl_s``. Records past that time may be deleted by this call."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's record (it stopped cleanly); no record is no error."""
        ...

    async def list_workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        """The workers whose record still holds at ``now`` (default: the current time),
        sorted by ``started_at``, then ``id``."""
        ...

    async def throughput(self, *, since: float, queue: str | None = None) -> list[Throughput]:
        """Per queue and minute, the jobs finished from the minute of ``since`` on (minutes
        in which nothing finished are left out), sorted by queue, then minute. The store
        counts them in the transaction or script that finishes the jobs: ``completed`` by
        :meth:`complete`, ``dead`` whenever a job enters ``dead`` (:meth:`dead_letter`, a
        reclaim past ``max_deliveries``), ``reclaimed`` by :meth:`reclaim_expired`. Minutes
        older than :data:`~forebay.fleet.THROUGHPUT_KEPT_S` are deleted by :meth:`prune`."""
        ...

    async def totals(self) -> list[QueueTotals]:
        """Per queue, the jobs finished since the store was created (the same counts as
        :meth:`throughput`, never pruned), sorted by queue."""
        ...
