"""The PostgreSQL backend: many workers on many machines, transactional enqueue.

One module (~1500 lines) on purpose: it is one concern, every transition of the Backend
Protocol on one engine (connections, schema and wake-ups live in modules of their own).

* Tables live in their own PostgreSQL schema (``forebay`` unless ``?schema=`` says otherwise),
  created by numbered, forward-only migrations (:mod:`forebay.backends.postgres.schema`);
  :meth:`PostgresBackend.migration_sql` prints them for DBAs without connecting.
* Leasing is one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))``: any
  number of workers on any number of hosts take disjoint jobs without waiting on each other;
  the partial index ``jobs_due`` keeps its cost flat as history grows.
* Wake-ups by LISTEN/NOTIFY (:mod:`~forebay.backends.postgres.listener`), so an idle worker
  starts a new job within milliseconds, with a fallback poll while the listener reconnects.
  Finished jobs are announced on a channel of their own, which only processes that wait for a
  job to finish listen to.
* Group commit (:mod:`forebay.group_commit`): concurrent enqueues become one
  multi-row ``INSERT ... SELECT FROM unnest(...)``, and concurrent outcomes (complete, retry,
  dead-letter, defer, release) one ``UPDATE``: one round trip and one commit for many callers.
* ``enqueue(..., connection=conn)`` runs on the caller's own asyncpg connection, inside their
  transaction: the jobs exist if and only if it commits.
* Runs and dependencies (``runs``, ``dependencies``; see :mod:`forebay.runs`): a job with a
  run, parents or a webhook is enqueued in a transaction that locks its parents and run, and
  finished in one that also counts its run (completing it once, under the run's row lock),
  stores its webhook's delivery and releases or cancels its waiting children. The plain
  settle statement leaves such jobs to that transaction, so jobs without links pay one
  condition (:mod:`~forebay.backends.postgres.links` makes the decisions).
* Flow control (:mod:`forebay.flow`): a queue's limits are a jsonb column of its ``queues``
  row. The plain lease statement leases nothing from a queue that has some (the same
  primary-key lookup as ``paused``), so a queue without limits pays nothing; a queue with
  limits leases in a transaction that locks its ``queues`` row (its flow leases take turns
  across the fleet, so caps and rates hold), reads its rate buckets and fair markers (table
  ``flow``) and running counts, fetches candidates, runs :func:`forebay.flow.plan` and writes
  the buckets back. Tenant quotas lock the tenant (an advisory lock) and count its unfinished
  jobs in the enqueue's transaction, as ``max_depth`` does for a queue.
* The fleet (:mod:`forebay.fleet`): worker records (``workers``, one row per process, a
  ``jsonb`` of its :class:`~forebay.fleet.WorkerInfo`), and finished jobs counted per queue
  and minute (``throughput``) and in total (``totals``) by data-modifying CTEs of the
  statements that finish them (settle, reclaim), each counter spread over a few rows so that
  the finishes of many connections do not commit one at a time behind its row lock.
* Schedules (``schedules`` table): a firing is one transaction, the compare-and-set of the
  schedule's last tick and the insert of the tick's jobs, the row locked until it commits.
* Errors are translated at the boundary and operations ride out a server restart
  (:mod:`~forebay.backends.postgres.connection`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from forebay import jsonio
from forebay.backends.base import Capabilities, Leased, PruneSpec
from forebay.backends.finishes import FinishWaiters, wait_finished
from forebay.backends.postgres.connection import (
    Connector,
    PostgresSettings,
    Resend,
    raise_translated,
)
from forebay.backends.postgres.links import (
    DEPENDENCY_FAILED,
    UNFINISHED,
    RunCounts,
    child_outcome,
    completion_jobs,
    delivery_job,
    has_links,
    refusal,
    run_from_row,
    stored_state,
)
from forebay.backends.postgres.listener import FinishListener, Listener
from forebay.backends.postgres.schema import finish_channel, migration_sql, migrations, queries
from forebay.backends.rows import job_from_row
from forebay.backends.schedule_rows import schedule_from_row
from forebay.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    EnqueueError,
    InvalidPayload,
    QueueFull,
    TenantQuotaFull,
)
from forebay.fleet import RECORD_GRACE_S, QueueTotals, Throughput, WorkerInfo, minute_of
from forebay.flow import (
    NO_LIMITS,
    Candidate,
    FlowLimits,
    FlowState,
    Plan,
    blocked_keys,
    budget,
    plan,
)
from forebay.group_commit import GroupCommit
from forebay.job import (
    Completion,
    DeadCursor,
    Deferral,
    Failure,
    Job,
    JobFilter,
    JobState,
    Lease,
    NewJob,
    QueueCounts,
    Retry,
    to_datetime,
)
from forebay.queue_settings import KEEP, Keep, QueueSettings, check_settings
from forebay.runs import NewRun, Run, RunState
from forebay.schedules import Firing, Schedule

__all__ = ["PostgresBackend"]

log = logging.getLogger("forebay.postgres")

T = TypeVar("T")

_ENQUEUE_GROUP_ROWS = 20_000  # rows per group-committed INSERT (one caller's batch may be more)
_SETTLE_GROUP_ROWS = 20_000
_LINKED_HINTS = 100_000  # leased jobs with links remembered at most (see _settle_round)
_LISTEN_WAIT_S = 2.0  # longest a first lease waits for LISTEN before falling back to polling


# Not frozen: built per call (and _Settlement per job) on the hot path, where frozen dataclasses
# cost several times more to build. Neither is changed after it is built.
@dataclass(slots=True)
class _Enqueue:
    jobs: list[NewJob]
    max_depth: dict[str, int]
    tenant_depth: dict[str, int]


@dataclass(slots=True)
class _Settlement:
    """One job leaving ``running``: the arguments of one row of the ``settle`` statement."""

    job_id: int
    token: str
    outcome: str  # complete | retry | dead | defer | release
    at: datetime | None = None
    message: str | None = None
    kind: str | None = None
    traceback: str | None = None
    result: str | None = None


_FINISHES = ("complete", "dead")


@dataclass(slots=True)
class _Round:
    """What one settle round did: the ids settled; when its transaction for jobs with links
    failed, their ids (``failed``) and why (their callers get the error)."""

    settled: set[int]
    failed: set[int]
    error: Exception | None = None


class PostgresBackend:
    """Jobs in PostgreSQL. See the module docstring; build it with :meth:`from_url`."""

    capabilities = Capabilities(
        name="postgres",
        cross_process_wakeup=True,
        transactional_enqueue=True,
        cross_process_finish_wakeup=True,
    )

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._q = queries(settings.schema)
        self._connector = Connector(settings)
        self._listener = Listener(self._connector.connect, settings.schema, poll_s=settings.poll_s)
        self._enqueuer: GroupCommit[_Enqueue, list[Job]] = GroupCommit(
            "enqueue",
            self._flush_enqueues,
            weight=lambda r: len(r.jobs),
            max_weight=_ENQUEUE_GROUP_ROWS,
            wrote_nothing=_refused_statement,
        )
        self._settler: GroupCommit[list[_Settlement], list[int]] = GroupCommit(
            "settle",
            self._flush_settlements,
            weight=len,
            max_weight=_SETTLE_GROUP_ROWS,
            wrote_nothing=_refused_statement,
        )
        self._open_lock = asyncio.Lock()
        self._listening: asyncio.Future[None] | None = None
        self._finishes = FinishWaiters()
        self._finish_listener = FinishListener(
            self._connector.connect,
            finish_channel(settings.schema),
            self._finishes,
            poll_s=settings.poll_s,
        )
        self._finish_listening: asyncio.Future[None] | None = None
        # Queues last seen with a stored max_depth: their enqueues go straight to the locked
        # path. Only a hint (the statements check the store either way), changed between awaits.
        self._capped: set[str] = set()
        # Queues last seen with flow limits: their leases go straight to the flow transaction.
        # Only a hint too (that transaction reads the stored limits).
        self._limited: set[str] = set()
        # Jobs this instance leased that have a run or a webhook: their finishes go straight
        # to the transaction for links (a hint: the plain statement would leave them anyway).
        self._linked: set[int] = set()
        self.applied_on_open: list[str] = []
        """Migrations that :meth:`open` applied (``forebay migrate`` reports them)."""

    @classmethod
    def from_url(cls, url: str) -> PostgresBackend:
        """``postgresql://user:password@host:5432/db?schema=forebay`` (see PostgresSettings)."""
        return cls(PostgresSettings.from_url(url))

    def __repr__(self) -> str:
        return f"PostgresBackend(schema={self.settings.schema!r})"

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        async with self._open_lock:
            if self._connector.is_open:
                return
            await self._connector.open()
            try:
                self.applied_on_open = await self.migrate()
                await self._check_autovacuum()
            except BaseException:
                await self._connector.close()
                raise

    async def _check_autovacuum(self) -> None:
        """Warn at start-up when nothing will reclaim the space of pruned jobs."""
        sql = self._q["autovacuum_on"]
        if not await self._run(lambda c: c.fetchval(sql), Resend.ALWAYS):
            log.warning(
                "autovacuum is off on this PostgreSQL server: the space of pruned jobs is never "
                "reused and forebay's jobs table grows without bound; turn autovacuum on (or "
                "VACUUM %s.jobs regularly)",
                self.settings.schema,
            )

    async def close(self) -> None:
        async with self._open_lock:
            await self._listener.stop()
            self._listening = None
            await self._finish_listener.stop()
            self._finish_listening = None
            await self._enqueuer.drain()
            await self._settler.drain()
            await self._connector.close()

    async def migrate(self) -> list[str]:
        return await self._run(self._migrate_on, Resend.IF_UNSENT)

    async def _migrate_on(self, conn: Any) -> list[str]:
        q = self._q
        wanted = migrations(self.settings.schema)
        if await conn.fetchval(q["migrations_table_exists"]):
            applied = {r[0] for r in await conn.fetch(q["applied_migrations"])}
            if all(version in applied for version, _, _ in wanted):
                return []  # up to date: needs no DDL rights (a DBA may have applied them)
        done = []
        async with conn.transaction():
            await conn.execute(q["migration_lock"])
            await conn.execute(q["create_schema"])
            await conn.execute(q["create_migrations_table"])
            applied = {r[0] for r in await conn.fetch(q["applied_migrations"])}
            for version, name, sql in wanted:
                if version in applied:
                    continue
                await conn.execute(sql)
                await conn.execute(q["record_migration"], version, name)
                done.append(name)
        return done

    def migration_sql(self) -> str:
        """The DDL :meth:`migrate` would run on an empty database, as one psql script, for this
        backend's schema (see :func:`~forebay.backends.postgres.schema.migration_sql`)."""
        return migration_sql(self.settings.schema)

    async def ping(self) -> None:
        await self._run(lambda c: c.fetchval("SELECT 1"), Resend.NEVER)

    async def drop_everything(self) -> None:
        """Drop this backend's PostgreSQL schema with every job in it."""
        await self._run(lambda c: c.execute(self._q["drop_schema"]), Resend.ALWAYS)

    # -- plumbing -------------------------------------------------------------------------
    async def _run(self, op: Callable[[Any], Awaitable[T]], resend: Resend) -> T:
        self._require_open()
        return await self._connector.run(op, resend)

    def _require_open(self) -> None:
        if not self._connector.is_open:
            raise BackendError("the PostgreSQL backend is not open; call open() first")

    # -- enqueue --------------------------------------------------------------------------
    async def enqueue(
        self,
        jobs: Sequence[NewJob],
        *,
        max_depth: dict[str, int] | None = None,
        tenant_max_depth: dict[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Job]:
        batch = list(jobs)
        if not batch:
            return []
        caps: dict[str, int] = {}
        if max_depth:
            present = {j.queue for j in batch}
            caps = {q: cap for q, cap in max_depth.items() if q in present}
        quotas: dict[str, int] = {}
        if tenant_max_depth:
            for tenant in {j.tenant for j in batch if j.tenant is not None}:
                # "*": every tenant without an entry of its own (never a tenant's name)
                quota = tenant_max_depth.get(tenant, tenant_max_depth.get("*"))
                if quota is not None:
                    quotas[tenant] = quota
        request = _Enqueue(batch, caps, quotas)
        if connection is not None:
            return await self._enqueue_on(connection, request)
        return await self._enqueuer.submit(request)

    async def _enqueue_on(self, connection: object, request: _Enqueue) -> list[Job]:
        """Transactional enqueue: the caller's connection, the caller's transaction."""
        if not isinstance(connection, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
            raise ConfigError(
                "connection= must be an asyncpg connection (asyncpg.connect() or a pool's "
                f"acquire()), inside your transaction; got {type(connection).__name__}"
            )
        try:
            result = (await _insert_requests(connection, self._q, [request], self._capped))[0]
        except Exception as exc:
            raise_translated(exc)
        if isinstance(result, BaseException):
            raise result
        return result

    async def _flush_enqueues(self, requests: list[_Enqueue]) -> list[list[Job] | BaseException]:
        keyed = all(j.key is not None for r in requests for j in r.jobs)
        # Raises for the whole group; the group commit then writes it again in halves when the
        # statement was refused (nothing stored), so one caller's bad value fails only it.
        return await self._run(
            lambda c: _insert_requests(c, self._q, requests, self._capped),
            Resend.ALWAYS if keyed else Resend.IF_UNSENT,  # keys make a repeat harmless
        )

    # -- running --------------------------------------------------------------------------
    async def lease(
        self,
        *,
        queue: str,
        limit: int,
        worker_id: str,
        lease_s: float,
        now: float | None = None,
    ) -> Leased:
        if limit <= 0:
            return Leased()
        self._require_open()
        if self._listening is None:
            # A process that leases will wait for work: LISTEN before its first lease, so no
            # job committed after that lease goes unnoticed. (Producers never listen.)
            self._listening = asyncio.ensure_future(self._listener.started(_LISTEN_WAIT_S))
        await asyncio.shield(self._listening)
        token = secrets.token_hex(8)
        at = None if now is None else _dt(now)
        throttled_until = None
        rows = None
        if queue not in self._limited:
            sql = self._q["lease"]
            rows = await self._run(
                lambda c: c.fetch(sql, queue, limit, token, float(lease_s), worker_id, at),
                Resend.ALWAYS,  # a lease whose answer was lost just expires; its jobs run again
            )
            rows.sort(key=lambda r: (-r[5], r[9], r[0]))
        if not rows:
            # Nothing by the plain statement: the queue may have flow limits (then the flow
            # transaction leases), be paused, or have nothing due. Queues seen with limits go
            # straight to the flow transaction next time (a hint: it reads the store).
            q = self._q
            took = await self._run(
                lambda c: _flow_lease(
                    c, q, queue, limit, token, float(lease_s), worker_id, now, rows is None
                ),
                Resend.ALWAYS,
            )
            if took is None:
                self._limited.discard(queue)
                if rows is None:  # the hint was stale: the plain statement after all
                    return await self.lease(
                        queue=queue, limit=limit, worker_id=worker_id, lease_s=lease_s, now=now
                    )
                rows = []
            else:
                self._limited.add(queue)
                rows, throttled_until = took
        jobs = Leased([job_from_row(r) for r in rows], throttled_until)
        linked = [j.id for j in jobs if j.run_id is not None or j.webhook is not None]
        if linked:
            if len(self._linked) > _LINKED_HINTS:
                self._linked.clear()  # leases that expired or were cancelled: forget them
            self._linked.update(linked)
        return jobs

    async def extend(self, leases: Sequence[Lease], *, lease_s: float) -> list[int]:
        if not leases:
            return []
        sql = self._q["extend"]
        ids = [lz.job_id for lz in leases]
        tokens = [lz.token for lz in leases]
        rows = await self._run(lambda c: c.fetch(sql, ids, tokens, float(lease_s)), Resend.ALWAYS)
        extended = {r[0] for r in rows}
        return [i for i in ids if i not in extended]

    async def progress(self, lease: Lease, *, pct: float, message: str | None) -> bool:
        sql = self._q["progress"]
        row = await self._run(
            lambda c: c.fetchval(sql, lease.job_id, lease.token, float(pct), message),
            Resend.ALWAYS,
        )
        return row is not None

    async def complete(self, completions: Sequence[Lease | Completion]) -> list[int]:
        return await self._settle(
            [
                _Settlement(c.job_id, c.token, "complete")
                if isinstance(c, Lease)
                else _Settlement(
                    c.lease.job_id, c.lease.token, "complete", None, None, None, None, c.result_json
                )
                for c in completions
            ]
        )

    async def retry(self, retries: Sequence[Retry]) -> list[int]:
        return await self._settle(
            [
                _Settlement(
                    r.lease.job_id,
                    r.lease.token,
                    "retry",
                    _dt(r.run_at),
                    r.error,
                    r.error_type,
                    r.traceback,
                )
                for r in retries
            ]
        )

    async def dead_letter(self, failures: Sequence[Failure]) -> list[int]:
        return await self._settle(
            [
                _Settlement(
                    f.lease.job_id, f.lease.token, "dead", None, f.error, f.error_type, f.traceback
                )
                for f in failures
            ]
        )

    async def defer(self, deferrals: Sequence[Deferral]) -> list[int]:
        return await self._settle(
            [
                _Settlement(d.lease.job_id, d.lease.token, "defer", _dt(d.run_at), d.reason)
                for d in deferrals
            ]
        )

    async def release(self, leases: Sequence[Lease]) -> list[int]:
        return await self._settle([_Settlement(lz.job_id, lz.token, "release") for lz in leases])

    async def _settle(self, settlements: list[_Settlement]) -> list[int]:
        """Group-committed: return the ids whose token did not match (refused)."""
        if not settlements:
            return []
        self._require_open()
        return await self._settler.submit(settlements)

    async def _flush_settlements(
        self, requests: list[list[_Settlement]]
    ) -> list[list[int] | BaseException]:
        refused: list[list[int]] = [[] for _ in requests]
        failed: dict[int, BaseException] = {}
        for number, round_ in enumerate(_rounds(requests)):
            try:
                settled = await self._settle_round([s for _, s in round_], first=number == 0)
            except Exception as exc:
                if number == 0:
                    raise  # nothing written yet: the group commit may split the group
                failed.update((index, exc) for index, _ in round_)  # earlier rounds stand
                continue
            for index, s in round_:
                if s.job_id in settled.failed and settled.error is not None:
                    failed[index] = settled.error
                elif s.job_id not in settled.settled:
                    refused[index].append(s.job_id)
        return [failed.get(index, ids) for index, ids in enumerate(refused)]

    async def _settle_round(self, items: list[_Settlement], *, first: bool) -> _Round:
        """Settle one round: the plain statement first, which leaves the finishes of jobs with
        links running; those (and the refused ones, which it cannot tell apart) again in a
        transaction that does what their finish entails. Finishes of jobs this instance leased
        with a run or a webhook go to that transaction at once."""
        q = self._q
        rest: list[_Settlement] = []
        if self._linked:
            rest = [s for s in items if s.job_id in self._linked and s.outcome in _FINISHES]
            if rest:
                items = [
                    s for s in items if s.job_id not in self._linked or s.outcome not in _FINISHES
                ]
                self._linked.difference_update(s.job_id for s in rest)
        settled: set[int] = set()
        if items:
            args = _settle_args(items)
            # Not resent after an error mid-flight: had it committed, a repeat would refuse
            # its own jobs. Jobs left unsettled keep running until their lease expires, then
            # run again (at-least-once).
            rows = await self._run(lambda c: c.fetch(q["settle"], *args, False), Resend.IF_UNSENT)
            settled = {r[0] for r in rows}
            rest += [s for s in items if s.job_id not in settled]
        if not rest:
            return _Round(settled, set())
        try:
            linked = await self._run(lambda c: _settle_linked(c, q, rest), Resend.IF_UNSENT)
        except Exception as exc:
            if first and not settled:
                raise  # nothing written: the group commit may split the group
            return _Round(settled, {s.job_id for s in rest}, exc)
        return _Round(settled | linked, set())

    async def reclaim_expired(self, *, now: float | None = None) -> int:
        sql = self._q["reclaim_expired"]
        at = None if now is None else _dt(now)
        return int(await self._run(lambda c: c.fetchval(sql, at), Resend.ALWAYS))

    # -- operator actions -----------------------------------------------------------------
    async def cancel(self, ids: Sequence[int]) -> list[int]:
        if not ids:
            return []
        q = self._q
        wanted = [int(i) for i in ids]

        async def op(conn: Any) -> list[int]:
            async with conn.transaction():
                rows = await conn.fetch(q["cancel"], wanted)
                linked = [r[0] for r in rows if r[1]]
                if linked:
                    await _finish_links(conn, q, linked)
            return sorted(r[0] for r in rows)

        return await self._run(op, Resend.IF_UNSENT)

    async def replay(self, where: JobFilter, *, dry_run: bool = False) -> int:
        if dry_run:
            return await self._dead_action("replay", where, dry_run)
        q = self._q
        args = _filter_args(where)

        async def op(conn: Any) -> int:
            async with conn.transaction():
                rows = await conn.fetch(q["replay"], *args)
                counts = RunCounts()
                for run_id, n in rows:
                    if run_id is not None:
                        counts.add(run_id, "dead", -n)
                if counts:
                    await _count_runs(conn, q, counts)
            return sum(n for _, n in rows)

        return await self._run(op, Resend.IF_UNSENT)

    async def purge(self, where: JobFilter, *, dry_run: bool = False) -> int:
        return await self._dead_action("purge", where, dry_run)

    async def _dead_action(self, name: str, where: JobFilter, dry_run: bool) -> int:
        args = _filter_args(where)
        sql = self._q["count_dead" if dry_run else name]
        resend = Resend.ALWAYS if dry_run else Resend.IF_UNSENT
        return int(await self._run(lambda c: c.fetchval(sql, *args), resend))

    async def prune(self, spec: PruneSpec) -> int:
        one = spec.queue is not None
        sql = self._q["prune_queue" if one else "prune"]
        args = (
            _dt(spec.completed_before),
            _dt(spec.dead_before),
            _dt(spec.cancelled_before),
            spec.limit,
            spec.queue if one else list(spec.other_than),
        )
        pruned = int(await self._run(lambda c: c.fetchval(sql, *args), Resend.ALWAYS))
        # The runs and minutes are counted too: a caller goes on while either is full.
        for name, before in (
            ("prune_runs", spec.runs_before),
            ("prune_throughput", spec.throughput_before),
        ):
            if before is not None:
                pruned += await self._prune_before(name, _dt(before), spec.limit)
        return pruned

    async def _prune_before(self, name: str, before: datetime, limit: int) -> int:
        sql = self._q[name]
        return int(await self._run(lambda c: c.fetchval(sql, before, limit), Resend.ALWAYS))

    # -- reading --------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        sql = self._q["get_job"]
        row = await self._run(lambda c: c.fetchrow(sql, int(job_id)), Resend.ALWAYS)
        return None if row is None else job_from_row(row)

    async def list_jobs(
        self, where: JobFilter, *, limit: int = 100, before_id: int | None = None
    ) -> list[Job]:
        sql = self._q["list_jobs"]
        args = (*_filter_args(where), before_id, limit)  # $9, $10
        rows = await self._run(lambda c: c.fetch(sql, *args), Resend.ALWAYS)
        return [job_from_row(r) for r in rows]

    async def counts(
        self, *, now: float | None = None, tenant: str | None = None
    ) -> list[QueueCounts]:
        q = self._q
        at = None if now is None else _dt(now)

        async def read(c: Any) -> tuple[list[Any], list[Any], dict[str, int]]:
            async with c.transaction(readonly=True, isolation="repeatable_read"):
                rows = await c.fetch(q["counts"], at, tenant)
                stalled = await c.fetch(q["stalled"], at, tenant)
                held = await _throttled(c, q, now, tenant)
            return rows, stalled, held

        rows, stalled, held = await self._run(read, Resend.ALWAYS)
        per_queue: dict[str, dict[str, Any]] = {}
        for queue, n in held.items():
            if n:
                per_queue.setdefault(queue, {})["throttled"] = n
        for queue, n in stalled:
            per_queue.setdefault(queue, {})["stalled"] = n
        for queue, state, n, scheduled, retrying, age in rows:
            detail = per_queue.setdefault(queue, {})
            detail[state] = n
            if state == JobState.QUEUED:
                detail["scheduled"] = scheduled
                detail["retrying"] = retrying
                detail["oldest_queued_age_s"] = None if age is None else max(0.0, age)
        return [QueueCounts(queue=q, **d) for q, d in sorted(per_queue.items())]

    async def wait_for_work(self, queues: Sequence[str], *, timeout_s: float) -> None:
        """Return on a notification for one of ``queues`` (from any process), or on timeout."""
        self._require_open()
        await self._listener.wait(queues, timeout_s)

    # -- schedules --------------------------------------------------------------------------
    async def save_schedules(self, schedules: Sequence[Schedule]) -> None:
        if not schedules:
            return
        schedules = list({s.name: s for s in schedules}.values())  # one row per name: the last
        sql = self._q["save_schedules"]
        args = (
            [s.name for s in schedules],
            [s.queue for s in schedules],
            [s.cron for s in schedules],
            [None if s.every is None else s.every.total_seconds() for s in schedules],
            [s.tz for s in schedules],
            [s.payload_json for s in schedules],
            [s.priority for s in schedules],
            [s.catch_up for s in schedules],
        )
        await self._run(lambda c: c.execute(sql, *args), Resend.ALWAYS)  # an upsert: repeatable

    async def list_schedules(self) -> list[Schedule]:
        sql = self._q["list_schedules"]
        rows = await self._run(lambda c: c.fetch(sql), Resend.ALWAYS)
        return [schedule_from_row(tuple(r)) for r in rows]

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        sql = self._q["delete_schedules"]
        rows = await self._run(lambda c: c.fetch(sql, list(names)), Resend.IF_UNSENT)
        return sorted(r[0] for r in rows)

    async def fire_schedule(self, firing: Firing) -> bool:
        q = self._q
        after = None if firing.after is None else _dt(firing.after)
        tick = _dt(firing.tick)

        async def op(conn: Any) -> bool:
            # One transaction: the advance and the jobs commit together or not at all; the
            # advanced row stays locked until then, so a concurrent firing of the same tick
            # waits and then finds the last tick moved (and changes nothing).
            async with conn.transaction():
                if await conn.fetchval(q["advance_schedule"], firing.name, after, tick) is None:
                    return False
                if firing.jobs:
                    await _insert(conn, q, list(firing.jobs), False)  # never capped
                return True

        # Resent safely: had the first try committed, the compare-and-set refuses the repeat.
        return await self._run(op, Resend.ALWAYS)

    # -- waiting for a job, and finding one by its key ------------------------------------
    async def wait_for_finish(self, job_id: int, *, timeout_s: float) -> Job | None:
        """Woken by the finish notifications of any process (see the listener); re-reads every
        ``poll_s`` while its LISTEN connection is down."""
        self._require_open()
        return await wait_finished(
            job_id,
            timeout_s=timeout_s,
            waiters=self._finishes,
            read=self.get_job,
            poll_s=self._finish_listener.poll_s_now,
            ready=self._listen_for_finishes,
        )

    async def _listen_for_finishes(self) -> None:
        if self._finish_listening is None:
            # The first wait LISTENs (at most _LISTEN_WAIT_S) before its first read, so no job
            # finished after that read goes unnoticed; later waits poll while it reconnects.
            self._finish_listening = asyncio.ensure_future(
                self._finish_listener.started(_LISTEN_WAIT_S)
            )
        await asyncio.shield(self._finish_listening)

    async def get_job_by_key(self, queue: str, key: str) -> Job | None:
        sql = self._q["job_by_key"]
        row = await self._run(lambda c: c.fetchrow(sql, queue, key), Resend.ALWAYS)
        return None if row is None else job_from_row(row)

    # -- dead letters by time of death -------------------------------------------------------
    async def list_dead(
        self, where: JobFilter, *, limit: int = 100, before: DeadCursor | None = None
    ) -> list[Job]:
        sql = self._q["list_dead"]
        cursor = (None, None) if before is None else (before.finished_at, before.id)
        args = (*_filter_args(replace(where, state=None)), *cursor, limit)
        rows = await self._run(lambda c: c.fetch(sql, *args), Resend.ALWAYS)
        return [job_from_row(r) for r in rows]

    # -- operator controls ----------------------------------------------------------------
    async def set_queue(
        self,
        queue: str,
        *,
        paused: bool | None = None,
        max_depth: int | Keep | None = KEEP,
        limits: FlowLimits | Keep = KEEP,
    ) -> QueueSettings:
        check_settings(queue, max_depth)
        if not isinstance(limits, FlowLimits | Keep):
            raise ConfigError(f"queue {queue!r}: limits must be FlowLimits, not {limits!r}")
        sql = self._q["set_queue"]
        depth = None if max_depth is KEEP else max_depth
        clear = max_depth is None
        stored = None
        if isinstance(limits, FlowLimits) and limits.active:
            stored = jsonio.dumps(limits.to_dict())
        setting = limits is not KEEP
        row = await self._run(
            lambda c: c.fetchrow(sql, queue, paused, depth, clear, stored, setting), Resend.ALWAYS
        )
        if setting:
            if stored is None:
                self._limited.discard(queue)
            else:
                self._limited.add(queue)
        return _settings(row)

    async def queue_settings(self) -> list[QueueSettings]:
        sql = self._q["queue_settings"]
        rows = await self._run(lambda c: c.fetch(sql), Resend.ALWAYS)
        return [_settings(r) for r in rows]

    async def run_now(self, ids: Sequence[int]) -> list[int]:
        if not ids:
            return []
        sql = self._q["run_now"]
        wanted = [int(i) for i in ids]
        rows = await self._run(lambda c: c.fetch(sql, wanted), Resend.ALWAYS)
        return sorted(r[0] for r in rows)

    async def cancel_where(self, where: JobFilter, *, dry_run: bool = False) -> int:
        args = _filter_args(where)
        q = self._q
        if dry_run:
            sql = q["count_cancellable"]
            return int(await self._run(lambda c: c.fetchval(sql, *args), Resend.ALWAYS))

        async def op(conn: Any) -> int:
            async with conn.transaction():
                count, linked = await conn.fetchrow(q["cancel_where"], *args)
                if linked:
                    await _finish_links(conn, q, linked)
            return int(count)

        return await self._run(op, Resend.IF_UNSENT)

    # -- the fleet ----------------------------------------------------------------------------
    async def save_worker(self, worker: WorkerInfo) -> None:
        sql = self._q["save_worker"]
        args = (
            worker.id,
            jsonio.dumps(worker.to_json()),
            worker.started_at,
            worker.expires_at,
            RECORD_GRACE_S,
        )
        await self._run(lambda c: c.execute(sql, *args), Resend.ALWAYS)  # an upsert: repeatable

    async def remove_worker(self, worker_id: str) -> None:
        sql = self._q["remove_worker"]
        await self._run(lambda c: c.execute(sql, worker_id), Resend.ALWAYS)

    async def list_workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        sql = self._q["list_workers"]
        at = None if now is None else _dt(now)
        rows = await self._run(lambda c: c.fetch(sql, at), Resend.ALWAYS)
        return [WorkerInfo.from_json(jsonio.loads(r[0])) for r in rows]

    async def throughput(self, *, since: float, queue: str | None = None) -> list[Throughput]:
        sql = self._q["throughput"]
        start = _dt(minute_of(since))
        rows = await self._run(lambda c: c.fetch(sql, start, queue), Resend.ALWAYS)
        return [Throughput(*r) for r in rows]

    async def totals(self) -> list[QueueTotals]:
        sql = self._q["totals"]
        rows = await self._run(lambda c: c.fetch(sql), Resend.ALWAYS)
        return [QueueTotals(*r) for r in rows]

    # -- runs -------------------------------------------------------------------------------
    async def start_run(self, run: NewRun) -> Run:
        q = self._q
        values = (
            run.id,
            run.name,
            run.key,
            run.meta_json,
            run.on_complete,
            run.webhook,
            run.tenant,
        )

        async def op(conn: Any) -> Run:
            # Resent safely: a repeat finds the run it stored (by key, or by its own id).
            stored = await conn.fetchval(q["start_run"], *values)
            found = stored
            if found is None and run.key is not None:
                found = await conn.fetchval(q["run_by_key"], run.key)
            row = await conn.fetchrow(q["get_run"], found or run.id)
            return run_from_row(row, created=stored is not None)

        return await self._run(op, Resend.ALWAYS)

    async def seal_run(self, run_id: str) -> Run | None:
        q = self._q

        async def op(conn: Any) -> Run | None:
            async with conn.transaction():
                sealed = await conn.fetchrow(q["seal_run"], run_id)
                if sealed is not None and sealed[6] == RunState.COMPLETED:
                    await _insert(conn, q, completion_jobs(sealed), False)
                row = await conn.fetchrow(q["get_run"], run_id)
            return None if row is None else run_from_row(row)

        # Resent safely: sealing a sealed (or completed) run changes nothing.
        return await self._run(op, Resend.ALWAYS)

    async def get_run(self, run_id: str) -> Run | None:
        sql = self._q["get_run"]
        row = await self._run(lambda c: c.fetchrow(sql, run_id), Resend.ALWAYS)
        return None if row is None else run_from_row(row)

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        limit: int = 100,
        before_id: str | None = None,
        tenant: str | None = None,
    ) -> list[Run]:
        sql = self._q["list_runs"]
        wanted = None if state is None else str(state)
        rows = await self._run(
            lambda c: c.fetch(sql, wanted, before_id, limit, tenant), Resend.ALWAYS
        )
        return [run_from_row(r) for r in rows]


def _settings(row: Any) -> QueueSettings:
    limits = NO_LIMITS if row[4] is None else FlowLimits.from_dict(jsonio.loads(row[4]))
    return QueueSettings(
        queue=row[0], paused=row[1], max_depth=row[2], updated_at=row[3], limits=limits
    )


def _refused_statement(exc: Exception) -> bool:
    """The server refused the statement (or it could not be encoded): nothing was written.
    (Unreachable means the statement may have committed, so that is not such a failure.)"""
    return isinstance(exc, InvalidPayload | BackendError) and not isinstance(
        exc, BackendUnavailable
    )


# -- statements run on one connection --------------------------------------------------------
async def _insert_requests(
    conn: Any, q: dict[str, str], requests: list[_Enqueue], capped: set[str]
) -> list[list[Job] | BaseException]:
    """Store the jobs of several requests in one statement (one transaction when any request
    has a max_depth, since its check and insert must not be split); one result per request.

    The limits are the stored ones (``queues.max_depth``), and a caller's own where tighter.
    Without a caller's limit the insert first runs alone, and itself finds out whether a queue
    has a stored one (then it inserts nothing and the locked path below runs)."""
    queues = {j.queue for r in requests for j in r.jobs}
    linked = any(has_links(j) for r in requests for j in r.jobs)
    limited = any(r.max_depth or r.tenant_depth for r in requests)
    if not linked and not limited and capped.isdisjoint(queues):
        try:
            return _split(
                [r.jobs for r in requests], await _insert(conn, q, _all_jobs(requests), True)
            )
        except _Capped:
            pass
    async with conn.transaction():  # a savepoint inside a caller's transaction
        requests = await _with_stored_depths(conn, q, requests, capped)
        verdicts: list[EnqueueError | None] = list(await _check_depths(conn, q, requests))
        if any(r.tenant_depth for r in requests):
            await _check_tenants(conn, q, requests, verdicts)
        if linked:
            parents = await _read_links(conn, q, requests, verdicts)
        accepted = [r for r, v in zip(requests, verdicts, strict=True) if v is None]
        jobs = _all_jobs(accepted)
        inserted = await _insert_linked(conn, q, jobs, parents) if linked else None
        stored = iter(
            _split(
                [r.jobs for r in accepted],
                inserted if inserted is not None else await _insert(conn, q, jobs, False),
            )
        )
    return [next(stored) if v is None else v for v in verdicts]


async def _read_links(
    conn: Any, q: dict[str, str], requests: list[_Enqueue], verdicts: list[EnqueueError | None]
) -> dict[int, str]:
    """Lock the parents (in id order) and runs (by id) the jobs name; refuse each request
    whose run is unknown or closed to it, or whose parent is missing (its verdict). Returns the
    parents' states."""
    jobs = _all_jobs(requests)
    wanted = sorted({p for j in jobs for p in j.after})
    parents: dict[int, str] = dict(await conn.fetch(q["lock_parents"], wanted)) if wanted else {}
    run_ids = sorted({j.run_id for j in jobs if j.run_id is not None})
    runs: dict[str, str] = dict(await conn.fetch(q["lock_runs"], run_ids)) if run_ids else {}
    asking = [
        (j.parent_id, j.run_id)
        for j in jobs
        if j.run_id is not None and j.parent_id is not None and runs.get(j.run_id, "open") != "open"
    ]
    may_join: set[tuple[int, str]] = set()
    if asking:
        rows = await conn.fetch(q["running_in_run"], [p for p, _ in asking], [r for _, r in asking])
        may_join = {(r[0], r[1]) for r in rows}
    for index, request in enumerate(requests):
        if verdicts[index] is None:
            verdicts[index] = refusal(request.jobs, parents, runs, may_join)
    return parents


# -- flow control (forebay.flow) ---------------------------------------------------------------
async def _flow_lease(
    conn: Any,
    q: dict[str, str],
    queue: str,
    limit: int,
    token: str,
    lease_s: float,
    worker_id: str,
    now: float | None,
    hinted: bool,
) -> tuple[list[Any], float | None] | None:
    """Lease from a queue with flow limits, in one transaction that holds the queue's row lock
    (so flow leases of the queue take turns across every worker): read the limits, the buckets
    and the running jobs, fetch candidates, plan (:func:`forebay.flow.plan`), take the planned
    jobs and write the buckets back. Returns the rows taken (in lease order) and when a rate
    frees a token for jobs held back; None when the queue has no limits (the plain statement
    leases), without a transaction unless ``hinted`` (the queue was last seen with limits: then
    the transaction starts straight away, and finds out).

    Round trips: BEGIN, the lock, the state, the candidates (again only when keys ran out of
    room within the lease), one statement that takes the jobs and writes the buckets, COMMIT."""
    if not hinted and not await conn.fetchval(q["flow_limited"], queue):
        return None
    async with conn.transaction():
        row = await conn.fetchrow(q["flow_queue"], queue)
        if row is None or row[1] is None:
            return None
        if row[0]:  # paused
            return [], None
        limits = FlowLimits.from_dict(jsonio.loads(row[1]))
        at = row[2] if now is None else float(now)
        state = await _flow_state(conn, q, queue, limits, at)
        room, wait = budget(limits, state, limit, at)
        if room <= 0:
            return [], wait
        no_token, full = blocked_keys(limits, state, at)
        chosen = await _flow_plan(conn, q, queue, limits, state, (no_token, full), limit, at)
        rows = await _flow_take(conn, q, queue, chosen, (token, lease_s, worker_id), at)
    return rows, chosen.throttled_until


async def _flow_plan(
    conn: Any,
    q: dict[str, str],
    queue: str,
    limits: FlowLimits,
    state: FlowState,
    blocked: tuple[set[str], set[str]],
    limit: int,
    at: float,
) -> Plan:
    """Fetch the best due jobs of the keys not ``blocked`` (rate keys without a token,
    concurrency keys at their cap) and plan. When the plan comes up short because keys ran
    out of room within this lease, fetch again without those keys too (each round leaves out
    one more key at least, so there are at most ``limit`` rounds)."""
    candidates: dict[int, Candidate] = {}
    skip_rate, skip_full = set(blocked[0]), set(blocked[1])
    room, _ = budget(limits, state, limit, at)
    while True:
        args = (queue, at, sorted(skip_rate), sorted(skip_full), limit)
        if limits.aging_s is not None:
            found = await conn.fetch(q["flow_ranked"], *args, limits.fair)
        else:
            found = await conn.fetch(q["flow_fair" if limits.fair else "flow_top"], *args)
        candidates.update((r[0], Candidate(*r)) for r in found)
        chosen = plan(limits, state, candidates.values(), limit=limit, now=at)
        if len(chosen.ids) >= room or not found:
            return chosen
        spent_rate, spent_full = _used_up(limits, state, chosen.ids, candidates, at)
        if spent_rate <= skip_rate and spent_full <= skip_full:
            return chosen
        skip_rate |= spent_rate
        skip_full |= spent_full


async def _flow_take(
    conn: Any,
    q: dict[str, str],
    queue: str,
    chosen: Plan,
    lease: tuple[str, float, str],
    at: float,
) -> list[Any]:
    """Take a plan's jobs (``lease``: token, seconds, worker) and write its new bucket times and
    fair markers (dropping the buckets full again), in one statement; the rows taken, in lease
    order."""
    writes = [("rate", key, tat) for key, tat in chosen.key_tats.items()]
    if chosen.queue_tat is not None:
        writes.append(("rate", "", chosen.queue_tat))
    writes += [("fair", "" if key is None else key, v) for key, v in chosen.served.items()]
    if not chosen.ids and not writes:
        return []
    kinds, keys, values = [list(c) for c in zip(*writes, strict=True)] if writes else ([], [], [])
    rows: list[Any] = await conn.fetch(
        q["flow_take"], chosen.ids, *lease, at, kinds, keys, values, queue
    )
    order = {job_id: n for n, job_id in enumerate(chosen.ids)}
    rows.sort(key=lambda r: order[r[0]])
    return rows


def _used_up(
    limits: FlowLimits,
    state: FlowState,
    ids: list[int],
    candidates: dict[int, Candidate],
    at: float,
) -> tuple[set[str], set[str]]:
    """The rate keys whose tokens, and the concurrency keys whose slots, the jobs ``ids``
    use up."""
    rate_used: Counter[str] = Counter()
    slots: Counter[str] = Counter()
    for job_id in ids:
        c = candidates[job_id]
        if c.rate_key is not None:
            rate_used[c.rate_key] += 1
        if c.concurrency_key is not None:
            slots[c.concurrency_key] += 1
    rate, cap = limits.rate_per_key, limits.concurrency_per_key
    spent_rate = (
        set()
        if rate is None
        else {k for k, n in rate_used.items() if rate.available(state.key_tats.get(k), at) <= n}
    )
    spent_full = (
        set()
        if cap is None
        else {k for k, n in slots.items() if state.running_per_key.get(k, 0) + n >= cap}
    )
    return spent_rate, spent_full


async def _flow_state(
    conn: Any, q: dict[str, str], queue: str, limits: FlowLimits, at: float
) -> FlowState:
    """What a lease of ``queue`` at ``at`` plans with: its live buckets, fair markers and
    running jobs (counted only for the limits that need them)."""
    state = FlowState()
    rows = await conn.fetch(
        q["flow_state"],
        queue,
        at,
        limits.concurrency is not None,
        limits.concurrency_per_key is not None,
        limits.fair,
    )
    for kind, key, value, count in rows:
        if kind == "rate":
            if key == "":
                state.queue_tat = value
            else:
                state.key_tats[key] = value
        elif kind == "fair":
            state.served[None if key == "" else key] = value
        elif kind == "running":
            state.running = int(count)
        else:
            state.running_per_key[key] = int(count)
    return state


class _Capped(Exception):
    """The insert found a stored max_depth on one of its queues and stored nothing."""


async def _with_stored_depths(
    conn: Any, q: dict[str, str], requests: list[_Enqueue], capped: set[str]
) -> list[_Enqueue]:
    """The requests with the stored limits of their queues (a caller's own where tighter);
    ``capped`` learns which of the queues have one."""
    queues = sorted({j.queue for r in requests for j in r.jobs})
    stored = {name: cap for name, cap in await conn.fetch(q["stored_depths"], queues)}
    capped.difference_update(queues)
    capped.update(stored)
    out = []
    for r in requests:
        present = {j.queue for j in r.jobs}
        caps = {name: cap for name, cap in stored.items() if name in present}
        for name, cap in r.max_depth.items():
            caps[name] = min(cap, caps.get(name, cap))
        out.append(_Enqueue(r.jobs, caps, r.tenant_depth))
    return out


def _all_jobs(requests: list[_Enqueue]) -> list[NewJob]:
    return [j for r in requests for j in r.jobs]


def _split(sizes: list[list[NewJob]], jobs: list[Job]) -> list[list[Job] | BaseException]:
    out: list[list[Job] | BaseException] = []
    start = 0
    for batch in sizes:
        out.append(jobs[start : start + len(batch)])
        start += len(batch)
    return out


async def _check_depths(
    conn: Any, q: dict[str, str], requests: list[_Enqueue]
) -> list[QueueFull | None]:
    """Lock the capped queues, count them, and refuse each request that would overflow one."""
    caps: dict[str, int] = {}
    for r in requests:
        for queue, cap in r.max_depth.items():
            caps[queue] = max(caps.get(queue, 0), cap)
    if not caps:
        return [None] * len(requests)
    await conn.fetchval(q["lock_queues"], list(caps))
    rows = await conn.fetch(q["depths"], list(caps), list(caps.values()))
    depth: Counter[str] = Counter({name: n for name, n in rows})
    verdicts: list[QueueFull | None] = []
    for r in requests:
        incoming = Counter(j.queue for j in r.jobs)
        full = [
            (queue, cap)
            for queue, cap in r.max_depth.items()
            if depth[queue] + incoming[queue] > cap
        ]
        if full:
            verdicts.append(QueueFull(*full[0]))
            continue
        depth.update(incoming)
        verdicts.append(None)
    return verdicts


async def _check_tenants(
    conn: Any, q: dict[str, str], requests: list[_Enqueue], verdicts: list[EnqueueError | None]
) -> None:
    """Lock the tenants that have a quota (so two producers of one tenant cannot both pass
    it), count their unfinished jobs in every queue, and refuse each request not yet refused
    that would take one past its quota (its verdict).

    Only jobs that will be stored count as incoming: a job whose (queue, key) is stored (read
    under the tenants' locks), or comes earlier in its request, comes back as that job and
    stores nothing. (One key in two requests of a group counts in both: a request let through
    here may yet be refused by its links, so the other's job may be the one stored.)"""
    caps: dict[str, int] = {}
    for r in requests:
        for tenant, cap in r.tenant_depth.items():
            caps[tenant] = max(caps.get(tenant, 0), cap)
    await conn.fetchval(q["lock_tenants"], list(caps))
    rows = await conn.fetch(q["tenant_depths"], list(caps), list(caps.values()))
    depth: Counter[str] = Counter({name: n for name, n in rows})
    keyed = {
        (j.queue, j.key)
        for i, r in enumerate(requests)
        if verdicts[i] is None
        for j in r.jobs
        if j.key is not None and j.tenant in r.tenant_depth
    }
    seen: set[tuple[str, str]] = set()
    if keyed:
        pairs = sorted(keyed)
        stored = await conn.fetch(q["stored_keys"], [p[0] for p in pairs], [p[1] for p in pairs])
        seen = {(row[0], row[1]) for row in stored}
    for index, r in enumerate(requests):
        if verdicts[index] is not None or not r.tenant_depth:
            continue
        incoming: Counter[str] = Counter()
        mine: set[tuple[str, str]] = set()
        for j in r.jobs:
            if j.tenant is None:
                continue
            if j.key is not None:
                if (j.queue, j.key) in seen or (j.queue, j.key) in mine:
                    continue
                mine.add((j.queue, j.key))
            incoming[j.tenant] += 1
        full = [
            (tenant, cap)
            for tenant, cap in r.tenant_depth.items()
            if depth[tenant] + incoming[tenant] > cap
        ]
        if full:
            verdicts[index] = TenantQuotaFull(*full[0])
            continue
        depth.update(incoming)


async def _insert(conn: Any, q: dict[str, str], jobs: list[NewJob], look: bool) -> list[Job]:
    """One multi-row INSERT; jobs whose (queue, key) exists come back as that job. ``look``:
    raise _Capped (nothing stored) when one of the queues has a stored max_depth."""
    if not jobs:
        return []
    try:
        args = _insert_args(jobs)
        sql = q["enqueue" if args[3] is not None else "enqueue_plain"]
        rows = await conn.fetch(sql, *args[:9], look, *args[9:])
    except asyncpg.DataError as exc:
        raise InvalidPayload(f"PostgreSQL refused a value of the job: {exc}") from exc
    if rows and rows[-1][0] is None:
        raise _Capped
    return await _matched(conn, q, jobs, rows)


async def _matched(conn: Any, q: dict[str, str], jobs: list[NewJob], rows: list[Any]) -> list[Job]:
    """One Job per input from the rows an insert returned (id, queue, key, created_at[,
    state]); a job whose key existed is read back as that job."""
    rows.sort(key=lambda r: r[0])  # ids were drawn in input order
    out: list[Job | None] = []
    existing: list[int] = []
    it = iter(rows)
    row = next(it, None)
    for index, new in enumerate(jobs):
        if row is not None and (new.key is None or (row[1] == new.queue and row[2] == new.key)):
            if len(row) > 4:
                out.append(new.stored_as(row[0], row[3], JobState(row[4])))
            else:
                out.append(new.stored_as(row[0], row[3]))
            row = next(it, None)
        else:
            out.append(None)
            existing.append(index)
    if existing:
        await _fill_existing(conn, q, jobs, existing, out)
    return [j for j in out if j is not None]


async def _insert_linked(
    conn: Any, q: dict[str, str], jobs: list[NewJob], parents: dict[int, str]
) -> list[Job]:
    """Store jobs of which some have links (their parents locked and read: ``parents``), in
    the state their parents say; then what their storing entails: the edges of waiting jobs
    (and their unfinished parents marked), the runs' counts, and the finish of a job stored
    cancelled (its run, its webhook)."""
    if not jobs:
        return []
    decided = [stored_state(j, parents) for j in jobs]
    try:
        rows = await conn.fetch(q["enqueue_linked"], *_linked_args(jobs, decided))
    except asyncpg.DataError as exc:
        raise InvalidPayload(f"PostgreSQL refused a value of the job: {exc}") from exc
    out = await _matched(conn, q, jobs, rows)
    created = [j for j in out if j.created]
    edges = [
        (p, j.id)
        for j in created
        if j.state is JobState.WAITING
        for p in j.after
        if parents[p] in UNFINISHED
    ]
    if edges:
        await conn.execute(q["mark_parents"], sorted({p for p, _ in edges}))
        await conn.execute(q["add_dependencies"], [p for p, _ in edges], [c for _, c in edges])
    joined = RunCounts()
    for j in created:
        if j.run_id is not None:
            joined.add(j.run_id, "total")
    failed = [j.id for j in created if j.state is JobState.CANCELLED]
    if failed or joined:
        await _finish_links(conn, q, failed, joined)
    return out


def _linked_args(jobs: list[NewJob], decided: list[tuple[str, str | None]]) -> tuple[Any, ...]:
    """The ``enqueue_linked`` statement's arrays, every column per job."""
    return (
        [j.payload_json for j in jobs],
        [j.queue for j in jobs],
        [j.key for j in jobs],
        [j.priority for j in jobs],
        [None if j.run_at is None else to_datetime(j.run_at) for j in jobs],
        [j.run_id for j in jobs],
        [j.max_attempts for j in jobs],
        [j.timeout_s for j in jobs],
        [state for state, _ in decided],
        [error for _, error in decided],
        [None if error is None else DEPENDENCY_FAILED for _, error in decided],
        [jsonio.dumps(list(j.after)) if j.after else None for j in jobs],
        [None if j.after_policy == "completed" else j.after_policy for j in jobs],
        [j.webhook for j in jobs],
        [j.parent_id for j in jobs],
        [j.tenant for j in jobs],
        [j.rate_key for j in jobs],
        [j.concurrency_key for j in jobs],
        [j.fair_key for j in jobs],
        [j.traceparent for j in jobs],
    )


# -- what a finish entails, for jobs with links ----------------------------------------------
async def _settle_linked(conn: Any, q: dict[str, str], items: list[_Settlement]) -> set[int]:
    """Settle jobs with links in one transaction with what their finishes entail."""
    async with conn.transaction():
        rows = await conn.fetch(q["settle"], *_settle_args(items), True)
        settled = {r[0] for r in rows}
        finished = [s.job_id for s in items if s.job_id in settled and s.outcome in _FINISHES]
        if finished:
            await _finish_links(conn, q, finished)
    return settled


async def _finish_links(
    conn: Any, q: dict[str, str], finished: list[int], counts: RunCounts | None = None
) -> None:
    """In the transaction that just finished the jobs ``finished``: their runs' counts (and
    completions), their webhooks' deliveries, and their waiting children released or
    cancelled, each cancelled child a finish in turn. ``counts``: what else this
    transaction adds to runs (an enqueue's new jobs). Locks children (in id order, parents
    before children) before runs (in id order)."""
    counts = counts if counts is not None else RunCounts()
    hooked: list[int] = []
    while finished:
        parents: dict[int, str] = {}
        for job_id, state, run_id, webhook, has_children in await conn.fetch(
            q["finished_links"], finished
        ):
            if run_id is not None:
                counts.add(run_id, state)
            if webhook:
                hooked.append(job_id)
            if has_children:
                parents[job_id] = state
        finished = await _settle_children(conn, q, parents) if parents else []
    jobs = []
    if hooked:
        jobs += [delivery_job(job_from_row(r)) for r in await conn.fetch(q["get_jobs"], hooked)]
    if counts:
        jobs += await _count_runs(conn, q, counts)
    if jobs:
        await _insert(conn, q, jobs, False)


async def _settle_children(conn: Any, q: dict[str, str], parents: dict[int, str]) -> list[int]:
    """The waiting children of ``parents`` (just finished, in this state): queued once no
    parent is unfinished, cancelled when their policy says a failed parent fails them; return
    the ids cancelled."""
    children = sorted({r[0] for r in await conn.fetch(q["take_children"], list(parents))})
    if not children:
        return []
    waiting = await conn.fetch(q["lock_waiting"], children)
    if not waiting:
        return []
    afters = {r[0]: tuple(jsonio.loads(r[1])) for r in waiting}
    wanted = sorted({p for after in afters.values() for p in after})
    states = dict(await conn.fetch(q["job_states"], wanted))
    release: list[int] = []
    failed: list[tuple[int, str]] = []
    for child_id, _, policy in waiting:
        outcome = child_outcome(afters[child_id], policy, states, set(parents))
        if outcome is None:
            continue
        if outcome[1] is None:
            release.append(child_id)
        else:
            failed.append((child_id, outcome[1]))
    if release:
        await conn.fetchval(q["release_waiting"], release)
    if not failed:
        return []
    rows = await conn.fetch(
        q["fail_waiting"], [c for c, _ in failed], [e for _, e in failed], DEPENDENCY_FAILED
    )
    return [r[0] for r in rows]


async def _count_runs(conn: Any, q: dict[str, str], counts: RunCounts) -> list[NewJob]:
    """Add ``counts`` to the runs (locked in id order); return the completion jobs of those
    that this completes (sealed before, completed now: once, under the row lock)."""
    jobs: list[NewJob] = []
    for row in await conn.fetch(q["count_runs"], *counts.args()):
        if row[6] == RunState.COMPLETED and row[-1] == RunState.SEALED:
            jobs += completion_jobs(row)
    return jobs


def _insert_args(jobs: list[NewJob]) -> tuple[Any, ...]:
    """The ``enqueue`` statement's arrays ($1 to $9, then $11 to $15: tenant, flow keys and
    trace context). A column whose every value is the default is sent as NULL (``unnest``
    pads it with NULLs, the statement fills in the default): encoding arrays element by
    element is most of the client's cost of a bulk enqueue."""
    queue = jobs[0].queue
    queues = None if all(j.queue == queue for j in jobs) else [j.queue for j in jobs]
    keys = [j.key for j in jobs] if any(j.key is not None for j in jobs) else None
    priorities = [j.priority for j in jobs] if any(j.priority for j in jobs) else None
    run_ats = (
        [None if j.run_at is None else to_datetime(j.run_at) for j in jobs]
        if any(j.run_at is not None for j in jobs)
        else None
    )
    run_ids = [j.run_id for j in jobs] if any(j.run_id is not None for j in jobs) else None
    attempts = (
        [j.max_attempts for j in jobs] if any(j.max_attempts is not None for j in jobs) else None
    )
    timeouts = [j.timeout_s for j in jobs] if any(j.timeout_s is not None for j in jobs) else None
    payloads = [j.payload_json for j in jobs]
    flow = [
        [getattr(j, name) for j in jobs]
        if any(getattr(j, name) is not None for j in jobs)
        else None
        for name in ("tenant", "rate_key", "concurrency_key", "fair_key", "traceparent")
    ]
    return payloads, queue, queues, keys, priorities, run_ats, run_ids, attempts, timeouts, *flow


async def _fill_existing(
    conn: Any, q: dict[str, str], jobs: list[NewJob], indexes: list[int], out: list[Job | None]
) -> None:
    rows = await conn.fetch(
        q["jobs_by_key"], [jobs[i].queue for i in indexes], [jobs[i].key for i in indexes]
    )
    found = {(r[1], r[4]): job_from_row(r, created=False) for r in rows}
    for i in indexes:
        job = found.get((jobs[i].queue, jobs[i].key))
        if job is None:  # deleted between the INSERT and this read (a purge): rare
            raise BackendError(
                f"job with key {jobs[i].key!r} on queue {jobs[i].queue!r} was deleted while "
                "being enqueued again; enqueue it once more"
            )
        out[i] = job


def _rounds(requests: list[list[_Settlement]]) -> list[list[tuple[int, _Settlement]]]:
    """Split a group so that no job appears twice in one statement (which would settle it
    once yet report it settled twice); in practice there is one round."""
    rounds: list[list[tuple[int, _Settlement]]] = []
    seen: list[set[int]] = []
    for index, request in enumerate(requests):
        for s in request:
            k = 0
            while k < len(rounds) and s.job_id in seen[k]:
                k += 1
            if k == len(rounds):
                rounds.append([])
                seen.append(set())
            rounds[k].append((index, s))
            seen[k].add(s.job_id)
    return rounds


def _settle_args(items: list[_Settlement]) -> tuple[Any, ...]:
    """The ``settle`` statement's arrays; like ``_insert_args``, all-default columns go as NULL."""
    outcome = items[0].outcome
    same = all(s.outcome == outcome for s in items)
    return (
        [s.job_id for s in items],
        [s.token for s in items],
        None if same else [s.outcome for s in items],
        [s.at for s in items] if any(s.at is not None for s in items) else None,
        [s.message for s in items] if any(s.message is not None for s in items) else None,
        [s.kind for s in items] if any(s.kind is not None for s in items) else None,
        outcome,
        [s.traceback for s in items] if any(s.traceback is not None for s in items) else None,
        [s.result for s in items] if any(s.result is not None for s in items) else None,
    )


def _filter_args(where: JobFilter) -> tuple[Any, ...]:
    return (
        where.queue,
        None if where.state is None else str(where.state),
        where.error_type,
        where.since,
        where.until,
        where.run_id,
        None if where.ids is None else [int(i) for i in where.ids],
        where.tenant,
    )


async def _throttled(
    conn: Any, q: dict[str, str], now: float | None, tenant: str | None
) -> dict[str, int]:
    """Per queue with flow limits: its due queued jobs (of ``tenant``) a lease at ``now``
    would hold back (see ``QueueCounts.throttled``)."""
    out: dict[str, int] = {}
    limited = await conn.fetch(q["flow_queues"])
    if not limited:
        return out
    at = float(now) if now is not None else await conn.fetchval(q["epoch_now"])
    for queue, text in limited:
        limits = FlowLimits.from_dict(jsonio.loads(text))
        if not limits.active:
            continue
        state = await _flow_state(conn, q, queue, limits, at)
        room, _ = budget(limits, state, 1, at)
        no_token, full = blocked_keys(limits, state, at)
        if room > 0 and not no_token and not full:
            continue
        out[queue] = int(
            await conn.fetchval(
                q["throttled"], queue, at, tenant, room <= 0, sorted(no_token), sorted(full)
            )
        )
    return out


def _dt(ts: float) -> datetime:
    value = to_datetime(ts)
    assert value is not None
    return value
