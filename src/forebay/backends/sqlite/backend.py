"""The SQLite backend: an embedded file, zero setup, safe for several processes on one machine.

One module on purpose: it is one concern, every transition of the Backend Protocol on one
engine, and splitting it by transition would scatter the writer's rules.

* WAL journal, ``synchronous=FULL`` by default: a committed job survives power loss.
  (``?synchronous=NORMAL`` in the URL trades that for speed: survives a process crash, not an
  OS crash.)
* All writes go through one :class:`~forebay.backends.sqlite.writer.Writer` thread that
  group-commits concurrent operations; reads use a second connection on a reader thread, so
  status queries never wait behind writes.
* Leasing picks and updates jobs under SQLite's write lock, so two processes never lease the
  same job; the partial index ``forebay_jobs_due`` keeps its cost flat as history grows.
* Flow control (:mod:`forebay.flow`): a queue's limits are JSON in ``forebay_queues.limits``.
  The plain lease's one look-up of that row (is it paused?) also asks whether it has limits,
  so a queue without them leases as before (a queue seen with limits has them looked up
  first, without that pick). With limits, the lease reads in its own writer
  operation the rate buckets and fair markers (``forebay_flow``) and the running counts, reads
  candidates best first per group (priority with aging, fair key with fair) from the indexes,
  lets :func:`~forebay.flow.plan` choose, and writes the buckets and markers back: SQLite's
  write lock makes that one step for every process on the file, so a cap holds fleet-wide.
  Tenant quotas are counted in the enqueue's transaction (``forebay_jobs_tenant``); a job
  whose key is already taken is not counted (one read of ``forebay_jobs_queue_key``, only
  when a quota is given).
* Payloads live in a table of their own (``forebay_payloads``): a job's row is rewritten at
  every state change, its payload is written once.
* Wake-ups: an enqueue wakes this process's workers at once; other processes notice the
  commit through ``PRAGMA data_version`` polled every ``poll_s`` (default 20 ms). Likewise a
  job finished in this process wakes its waiters (:meth:`SQLiteBackend.wait_for_finish`) at
  once; SQLite has no way to tell another process, so there a waiter re-reads its job every
  ``_FINISH_POLL_S``.
* Schedules (``forebay_schedules``): a firing is one writer operation, the compare-and-set
  of the schedule's last tick and the insert of the tick's jobs in one savepoint.
* Runs (``forebay_runs``) keep ``total`` and the finished counts on their row, moved in the
  writer operation of every enqueue and finish of their jobs; their unfinished jobs are
  counted at read (the partial index ``forebay_jobs_run_state``), so leasing and retrying a
  job of a run cost what any job costs. Dependencies: ``forebay_deps`` holds (parent, child)
  for each parent a waiting child still waits for. A finish follows a job's links (its run,
  its webhook, its waiting children, and so on down) in its own operation; which finished
  jobs have links is read in the statement that finishes them (one probe of the empty
  ``forebay_deps`` for a job without a run or webhook), so plain jobs pay next to nothing.
  Every write is serialised by SQLite's write lock, so two last jobs of a run, or two parents
  of a child, finishing at once in two processes are counted one after the other: a run
  completes, and a child is released, exactly once.
* The fleet (:mod:`forebay.fleet`): worker records are JSON rows of ``forebay_workers``, with
  the time they hold until (indexed: a save deletes the expired ones, a listing skips them).
  Finished jobs are counted per queue and minute (``forebay_throughput``) and in total
  (``forebay_totals``) in the writer operation that finishes them: one upsert of each per
  queue and operation, however many jobs it finished (the settle's read of the jobs it holds
  also says how many of them there are and of which queue), so a refused settle counts
  nothing and a group commit of many settles costs a few rows more.
* The file is watched: should it be deleted or replaced while open (an operator's ``rm``), the
  open connections would go on writing into a file no one can open again, and every job
  acknowledged from then on would be lost at the next start. So before each group commit and
  in :meth:`ping`, the path must still name the file that was opened (same device and inode);
  if not, writes fail with BackendUnavailable (HTTP 503) and an error is logged.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from forebay import jsonio
from forebay.backends.base import (
    Capabilities,
    Leased,
    PruneSpec,
    refuse_connection,
    split_completions,
)
from forebay.backends.finishes import FinishWaiters, wait_finished
from forebay.backends.rows import COLUMNS, job_from_row
from forebay.backends.schedule_rows import schedule_definition, schedule_from_row
from forebay.backends.sqlite.writer import Mergeable, Writer, translate
from forebay.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    QueueFull,
    RunSealed,
    TenantQuotaFull,
    UnknownParent,
    UnknownRun,
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
)
from forebay.queue_settings import KEEP, Keep, QueueSettings, check_settings
from forebay.runs import (
    DEPENDENCY_FAILED,
    JOB_WEBHOOK_TYPES,
    RUN_COMPLETED,
    WEBHOOK_QUEUE,
    NewRun,
    Run,
    RunState,
    job_summary,
    run_from_values,
    run_summary,
    webhook_payload,
)
from forebay.schedules import Firing, Schedule
from forebay.sqlfiles import migration_files, render_queries

__all__ = ["SQLiteBackend"]

T = TypeVar("T")

log = logging.getLogger("forebay.sqlite")

_PACKAGE = "forebay.backends.sqlite"
_SYNC_MODES = ("FULL", "NORMAL", "EXTRA")
# Rows a lease or settle touches per writer operation. Python's sqlite3 lets go of the GIL at
# every row a statement steps through, and while the event loop is busy each hand-back waits
# up to the interpreter's switch interval (5 ms): a 500-row lease measured 5 ms on an idle
# process and 1.7 s beside a busy thread. Enqueues wait behind the operation that holds the
# write transaction, so the writes of leases and settles step through one row each (ids go in
# and out as one JSON array), a lease reads its jobs after its commit on the reader thread, and
# big leases and settles still go in pieces, with other writes in between.
_ROWS_PER_OP = 100
_FINISH_POLL_S = 0.2
_FAIR_KEPT_S = 86400.0
"""How long a fair key's marker is kept after it was last served (pruning): a key back after
longer goes first, as it would with its old marker."""
"""How often a waiter re-reads its job, for the jobs other processes finish."""


_RUN_FIELDS = (
    "id",
    "name",
    "key",
    "meta",
    "state",
    "on_complete",
    "webhook",
    "total",
    "waiting",
    "queued",
    "running",
    "completed",
    "dead",
    "cancelled",
    "created_at",
    "sealed_at",
    "completed_at",
    "tenant",
)
_UNFINISHED = ("waiting", "queued", "running")

Q = render_queries(
    _PACKAGE,
    {
        # A job's columns, in the order of forebay.backends.rows.COLUMNS; its payload is kept
        # in a table of its own since schema version 2 (see that migration).
        "columns": ", ".join(("p." if name == "payload" else "j.") + name for name in COLUMNS),
        "jobs": "forebay_jobs AS j JOIN forebay_payloads AS p ON p.job_id = j.id",
        # A run's columns in the order of forebay.runs.run_from_values; its unfinished jobs
        # are counted through forebay_jobs_run_state (whose WHERE the query repeats, for
        # SQLite to see that the partial index applies).
        "run_columns": ", ".join(
            "(SELECT COUNT(*) FROM forebay_jobs WHERE run_id = r.id"
            f" AND state IN ('waiting', 'queued', 'running') AND state = '{name}')"
            if name in _UNFINISHED
            else f"r.{name}"
            for name in _RUN_FIELDS
        ),
    },
    inline=("filter", "append_error", "linked"),
)

_LEASE_EXPIRED: dict[str, Any] = {
    "error": "lease expired: the worker stopped heartbeating (crashed or was killed)",
    "error_type": "LeaseExpired",
    "traceback": None,
}


def _filter_params(where: JobFilter) -> dict[str, Any]:
    return {
        "queue": where.queue,
        "state": None if where.state is None else str(where.state),
        "error_type": where.error_type,
        "since": None if where.since is None else where.since.timestamp(),
        "until": None if where.until is None else where.until.timestamp(),
        "run_id": where.run_id,
        "tenant": where.tenant,
        "ids": None if where.ids is None else json.dumps(list(where.ids)),
    }


class SQLiteBackend:
    """Jobs in one SQLite file. See the module docstring."""

    capabilities = Capabilities(
        name="sqlite",
        cross_process_wakeup=False,
        transactional_enqueue=False,
        cross_process_finish_wakeup=False,
    )

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "FULL", poll_s: float = 0.02
    ) -> None:
        if str(path) in ("", ":memory:"):
            raise ConfigError(
                "the SQLite backend needs a file (several connections share it); "
                "use sqlite:///path/to/forebay.db"
            )
        synchronous = synchronous.upper()
        if synchronous not in _SYNC_MODES:
            raise ConfigError(f"synchronous must be one of {', '.join(_SYNC_MODES)}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.poll_s = poll_s
        self._writer: Writer | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._local_wakeup: dict[str, asyncio.Event] = {}
        self._reader_local = threading.local()
        self._seen_version: dict[tuple[str, ...], int] = {}
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._lost_reported = False
        self._finishes = FinishWaiters()
        self._limited: set[str] = set()
        """Queues last seen with flow limits (the writer thread's; see :func:`_pick`). Stale
        either way, it costs one look-up more, never a wrong lease."""

        self.applied_on_open: list[str] = []
        """Migrations that :meth:`open` applied (``forebay migrate`` reports them)."""

    @classmethod
    def from_url(cls, url: str) -> SQLiteBackend:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with the options
        ``?synchronous=FULL|NORMAL|EXTRA`` and ``?poll_ms=20`` (see the module docstring)."""
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"SQLite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////absolute.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigError(f"SQLite URL {url!r} names no file: use sqlite:///./forebay.db")
        options = dict(parse_qsl(parts.query))
        synchronous = options.pop("synchronous", "FULL")
        poll_s = 0.02
        if "poll_ms" in options:
            try:
                poll_s = float(options.pop("poll_ms")) / 1000
            except ValueError:
                raise ConfigError("poll_ms must be a number of milliseconds") from None
        if options:
            raise ConfigError(f"unknown SQLite URL options: {', '.join(sorted(options))}")
        return cls(path, synchronous=synchronous, poll_s=poll_s)

    def __repr__(self) -> str:
        return f"SQLiteBackend({str(self.path)!r})"

    # -- lifecycle ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA busy_timeout = 30000")
        mode = _set_wal(conn)
        if str(mode).lower() != "wal":
            conn.close()
            raise BackendError(f"could not switch {self.path} to WAL journal mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # validated in __init__
        conn.execute("PRAGMA temp_store = MEMORY")
        if self._identity is None:  # the writer connects first, creating the file
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
        return conn

    def _check_file(self) -> None:
        """Raise BackendUnavailable unless the path still names the file that was opened."""
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if same:
            return
        message = (
            f"the SQLite file {self.path} was deleted or replaced while forebay had it open; "
            "nothing more is written to it (it would be lost): restore the file, or restart "
            "forebay to start a new store"
        )
        if not self._lost_reported:
            self._lost_reported = True
            log.error(message)
        raise BackendUnavailable(message)

    async def open(self) -> None:
        async with self._open_lock:
            if self._writer is not None:
                return
            if self.path.parent and not self.path.parent.exists():
                raise ConfigError(f"folder {self.path.parent} does not exist")
            self._identity, self._lost_reported = None, False
            writer = Writer(self._connect, check=self._check_file)
            try:
                await asyncio.to_thread(writer.start)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            self._writer = writer
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="forebay-sqlite-reader")
            self.applied_on_open = await self.migrate()

    async def close(self) -> None:
        async with self._open_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                await asyncio.to_thread(writer.stop)
            reader, self._reader = self._reader, None
            if reader is not None:
                await asyncio.get_running_loop().run_in_executor(reader, self._close_reader)
                reader.shutdown(wait=True)

    def _close_reader(self) -> None:
        conn = getattr(self._reader_local, "conn", None)
        if conn is not None:
            conn.close()
            self._reader_local.conn = None

    async def migrate(self) -> list[str]:
        return await self._write(_apply_migrations)

    def migration_sql(self) -> str:
        """The migrations' SQL, as :meth:`migrate` would run it on a new file (no connection)."""
        return "\n".join(
            f"-- {name}\n{text.strip()}\n" for _, name, text in migration_files(_PACKAGE)
        )

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
        self._check_file()

    async def drop_everything(self) -> None:
        """Drop forebay's tables from the file, with every job in them (the file stays)."""
        await self._write(_drop_tables)

    # -- plumbing -------------------------------------------------------------------------
    def _write(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._writer is None:
            raise BackendError("the SQLite backend is not open; call open() first")
        return self._writer.submit(op)

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise BackendError("the SQLite backend is not open; call open() first")

        def run() -> T:
            conn = getattr(self._reader_local, "conn", None)
            if conn is None:
                conn = self._reader_local.conn = self._connect()
            try:
                return op(conn)
            except sqlite3.Error as exc:
                raise translate(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    def _follow(self, effects: _Effects) -> None:
        """Once committed: wake the workers of the queues that got due jobs, and the waiters
        of the jobs finished along a finish's links."""
        self._wake(effects.queues)
        self._announce_finished(effects.finished)

    def _wake(self, queues: Iterable[str]) -> None:
        for name in queues:
            event = self._local_wakeup.get(name)
            if event is not None:
                event.set()

    # -- enqueue --------------------------------------------------------------------------
    async def enqueue(
        self,
        jobs: Sequence[NewJob],
        *,
        max_depth: dict[str, int] | None = None,
        tenant_max_depth: dict[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Job]:
        refuse_connection(self.capabilities, connection)
        if not jobs:
            return []
        op = _Enqueue(list(jobs), max_depth or {}, tenant_max_depth or {})
        result: list[Job] = await self._write(op)
        self._wake({j.queue for j in op.jobs})
        if op.effects:
            self._follow(op.effects)
        return result

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
        token = secrets.token_hex(8)
        throttled: list[float | None] = [None]  # the flow path's throttled_until
        flowed = [False]  # whether the last piece took the flow path
        limited = self._limited

        def op(conn: sqlite3.Connection, chunk: int) -> str:
            at = time.time() if now is None else now
            ids, limits = _pick(conn, queue, chunk, at, limited)
            if limits is not None:
                flowed[0] = True
                ids, throttled[0] = _flow_pick(conn, queue, limits, chunk, at)
            if ids != "[]":
                params = {"token": token, "expires": at + lease_s, "worker": worker_id}
                conn.execute(Q["lease"], params | {"now": at, "ids": ids})
            return ids

        def read(conn: sqlite3.Connection, ids: str) -> list[Job]:
            rows = conn.execute(Q["leased"], {"ids": ids, "token": token}).fetchall()
            jobs = [job_from_row(r, epoch_times=True) for r in rows]
            if not flowed[0] or len(jobs) < 2:
                return jobs
            # a flow lease's order is the plan's (fair turns, aged priorities)
            order = {job_id: i for i, job_id in enumerate(json.loads(ids))}
            return sorted(jobs, key=lambda j: order[j.id])

        jobs = Leased()
        while len(jobs) < limit:
            chunk = min(_ROWS_PER_OP, limit - len(jobs))
            throttled[0], flowed[0] = None, False
            try:
                ids = await self._write(functools.partial(op, chunk=chunk))
                got = [] if ids == "[]" else await self._read(functools.partial(read, ids=ids))
            except BackendError:
                if jobs:  # keep the pieces already leased; the next lease tries again
                    break
                raise
            jobs.extend(got)
            jobs.throttled_until = throttled[0]
            if len(got) < chunk:
                break
        return jobs

    async def extend(self, leases: Sequence[Lease], *, lease_s: float) -> list[int]:
        return await self._settle_by_token(Q["extend"], leases, lease_s=lease_s)

    async def progress(self, lease: Lease, *, pct: float, message: str | None) -> bool:
        def params(now: float) -> Iterable[tuple[Any, ...]]:
            return [(pct, message, now, lease.job_id, lease.token)]

        return not await self._settle(Q["progress"], [lease], params)

    async def complete(self, completions: Sequence[Lease | Completion]) -> list[int]:
        plain, results = split_completions(completions)
        refused = await self._settle_by_token(Q["complete"], plain, finish=True) if plain else []
        if results:

            def params(now: float) -> Iterable[tuple[Any, ...]]:
                return ((now, now, c.result_json, c.lease.job_id, c.lease.token) for c in results)

            leases = [c.lease for c in results]
            refused += await self._settle(Q["complete_result"], leases, params, finish=_COMPLETED)
        self._announce_finished(
            c.job_id if isinstance(c, Lease) else c.lease.job_id for c in completions
        )
        return refused

    async def retry(self, retries: Sequence[Retry]) -> list[int]:
        def params(now: float) -> Iterable[dict[str, Any]]:
            return (
                {
                    "run_at": r.run_at,
                    "error": r.error,
                    "error_type": r.error_type,
                    "traceback": r.traceback,
                    "now": now,
                    "id": r.lease.job_id,
                    "token": r.lease.token,
                }
                for r in retries
            )

        return await self._settle(Q["retry"], [r.lease for r in retries], params)

    async def dead_letter(self, failures: Sequence[Failure]) -> list[int]:
        def params(now: float) -> Iterable[dict[str, Any]]:
            return (
                {
                    "error": f.error,
                    "error_type": f.error_type,
                    "traceback": f.traceback,
                    "now": now,
                    "id": f.lease.job_id,
                    "token": f.lease.token,
                }
                for f in failures
            )

        refused = await self._settle(
            Q["dead_letter"], [f.lease for f in failures], params, finish=_DEAD
        )
        self._announce_finished(f.lease.job_id for f in failures)
        return refused

    async def defer(self, deferrals: Sequence[Deferral]) -> list[int]:
        def params(now: float) -> Iterable[tuple[Any, ...]]:
            return ((d.run_at, d.reason, now, d.lease.job_id, d.lease.token) for d in deferrals)

        return await self._settle(Q["defer"], [d.lease for d in deferrals], params)

    async def release(self, leases: Sequence[Lease]) -> list[int]:
        def params(now: float) -> Iterable[tuple[Any, ...]]:
            return ((now, lz.job_id, lz.token) for lz in leases)

        return await self._settle(Q["release"], leases, params)

    async def _settle_by_token(
        self, sql: str, leases: Sequence[Lease], *, lease_s: float = 0.0, finish: bool = False
    ) -> list[int]:
        """One set-based UPDATE per lease token (in pieces of at most _ROWS_PER_OP jobs); return
        the ids whose token did not match. ``finish``: the UPDATE finishes the jobs, whose
        links are followed in the same operation (see :func:`_finished`)."""
        if not leases:
            return []
        effects = _Effects()
        holding = Q["holding_linked"] if finish else Q["holding"]

        def op(conn: sqlite3.Connection, piece: list[tuple[str, list[int]]]) -> list[int]:
            now = time.time()
            refused: list[int] = []
            linked: list[int] = []
            counts: dict[str, int] = {}
            for token, ids in piece:
                asked = json.dumps(sorted(ids), separators=(",", ":"))
                found = conn.execute(holding, {"token": token, "ids": asked}).fetchone()
                held = found[0]
                if held != "[]":
                    conn.execute(sql, {"ids": held, "now": now, "expires": now + lease_s})
                    if finish:
                        _held_finished(conn, found, counts, linked)
                if held != asked:
                    done = set(json.loads(held))
                    refused.extend(i for i in ids if i not in done)
            # counted and followed once for the piece, whatever the number of leases in it
            if counts:
                _count_finished(conn, now, counts, _COMPLETED)
            if linked:
                _finished(conn, linked, now, effects)
            return refused

        refused: list[int] = []
        for piece in _by_token(leases):
            refused.extend(await self._write(functools.partial(op, piece=piece)))
        if effects:
            self._follow(effects)
        return refused

    async def _settle(
        self,
        sql: str,
        leases: Sequence[Lease],
        params: Callable[[float], Iterable[tuple[Any, ...] | dict[str, Any]]],
        *,
        finish: int | None = None,
    ) -> list[int]:
        """Run one token-checked UPDATE per job; return the ids whose token did not match.
        ``finish``: the UPDATE finishes the job (counted as that outcome, see
        :func:`_count_finished`) and returns whether it has links, which are followed in the
        same operation (see :func:`_finished`), and its queue."""
        if not leases:
            return []
        effects = _Effects()

        def op(conn: sqlite3.Connection) -> list[int]:
            refused = []
            execute = conn.execute
            now = time.time()
            if finish is None:
                for lease, args in zip(leases, params(now), strict=True):
                    if execute(sql, args).rowcount != 1:
                        refused.append(lease.job_id)
                return refused
            linked = []
            counts: dict[str, int] = {}
            for lease, args in zip(leases, params(now), strict=True):
                row = execute(sql, args).fetchone()
                if row is None:
                    refused.append(lease.job_id)
                    continue
                if row[0]:
                    linked.append(lease.job_id)
                counts[row[1]] = counts.get(row[1], 0) + 1
            if counts:
                _count_finished(conn, now, counts, finish)
            if linked:
                _finished(conn, linked, now, effects)
            return refused

        refused = await self._write(op)
        if effects:
            self._follow(effects)
        return refused

    async def reclaim_expired(self, *, now: float | None = None) -> int:
        at = time.time() if now is None else now
        params = _LEASE_EXPIRED | {"now": at}

        def op(conn: sqlite3.Connection) -> int:
            counts = dict(conn.execute(Q["expired_per_queue"], {"now": at}).fetchall())
            if not counts:
                return 0
            count = int(conn.execute(Q["reclaim_expired"], params).rowcount)
            _count_finished(conn, at, counts, _RECLAIMED)
            return count

        return await self._write(op)

    # -- operator actions -----------------------------------------------------------------
    async def cancel(self, ids: Sequence[int]) -> list[int]:
        if not ids:
            return []
        payload = json.dumps([int(i) for i in ids])

        effects = _Effects()

        def op(conn: sqlite3.Connection) -> list[int]:
            now = time.time()
            rows = conn.execute(Q["cancel"], {"now": now, "ids": payload}).fetchall()
            _finished(conn, [r[0] for r in rows if r[1]], now, effects)
            return sorted(r[0] for r in rows)

        cancelled = await self._write(op)
        self._announce_finished(cancelled)
        self._follow(effects)
        return cancelled

    async def replay(self, where: JobFilter, *, dry_run: bool = False) -> int:
        params = _filter_params(where) | {"now": time.time()}
        if dry_run:
            return int(await self._read(lambda c: c.execute(Q["count_dead"], params).fetchone()[0]))

        def op(conn: sqlite3.Connection) -> int:
            replayed = conn.execute(Q["replay"], params).fetchall()
            per_run: dict[str, int] = {}
            for (run_id,) in replayed:
                if run_id is not None:
                    per_run[run_id] = per_run.get(run_id, 0) + 1
            for run_id, n in sorted(per_run.items()):
                conn.execute(Q["run_replayed"], {"id": run_id, "n": n})
            return len(replayed)

        count = await self._write(op)
        self._wake(self._local_wakeup)
        return count

    async def purge(self, where: JobFilter, *, dry_run: bool = False) -> int:
        params = _filter_params(where)
        if dry_run:
            return int(await self._read(lambda c: c.execute(Q["count_dead"], params).fetchone()[0]))
        return int(await self._write(lambda c: c.execute(Q["purge"], params).rowcount))

    async def prune(self, spec: PruneSpec) -> int:
        params: dict[str, Any] = {
            "completed_before": spec.completed_before,
            "dead_before": spec.dead_before,
            "cancelled_before": spec.cancelled_before,
            "limit": spec.limit,
        }
        if spec.queue is not None:
            sql, params["queue"] = Q["prune_queue"], spec.queue
        else:
            sql, params["others"] = Q["prune"], jsonio.dumps(list(spec.other_than))
        runs_before = spec.runs_before
        throughput_before = spec.throughput_before

        def op(conn: sqlite3.Connection) -> int:
            """Jobs, then completed runs (each up to the limit): how many of both went (the
            minutes of throughput go too, uncounted)."""
            pruned = int(conn.execute(sql, params).rowcount)
            at = time.time()
            conn.execute(Q["prune_flow"], {"now": at, "fair_before": at - _FAIR_KEPT_S})
            if runs_before is not None:
                runs = {"runs_before": runs_before, "limit": spec.limit}
                pruned += int(conn.execute(Q["prune_runs"], runs).rowcount)
            if throughput_before is not None:
                conn.execute(Q["prune_throughput"], {"before": throughput_before})
            return pruned

        return await self._write(op)

    # -- reading --------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        row = await self._read(lambda c: c.execute(Q["get_job"], (job_id,)).fetchone())
        return None if row is None else job_from_row(row, epoch_times=True)

    async def list_jobs(
        self, where: JobFilter, *, limit: int = 100, before_id: int | None = None
    ) -> list[Job]:
        params = _filter_params(where) | {"limit": limit, "before_id": before_id}
        rows = await self._read(lambda c: c.execute(Q["list_jobs"], params).fetchall())
        return [job_from_row(r, epoch_times=True) for r in rows]

    async def counts(
        self, *, now: float | None = None, tenant: str | None = None
    ) -> list[QueueCounts]:
        at = time.time() if now is None else now
        params = {"now": at, "tenant": tenant}

        def op(conn: sqlite3.Connection) -> list[QueueCounts]:
            per_queue: dict[str, dict[str, Any]] = {}
            if tenant is None:
                states = conn.execute(Q["counts"])
            else:
                states = conn.execute(Q["tenant_counts"], {"tenant": tenant})
            for queue, state, n in states:
                per_queue.setdefault(queue, {})[state] = n
            for queue, scheduled, retrying, oldest in conn.execute(Q["queued_detail"], params):
                detail = per_queue.setdefault(queue, {})
                detail["scheduled"] = scheduled or 0
                detail["retrying"] = retrying or 0
                detail["oldest_queued_age_s"] = None if oldest is None else max(0.0, at - oldest)
            for queue, stalled in conn.execute(Q["stalled"], params):
                per_queue.setdefault(queue, {})["stalled"] = stalled
            for queue, text in conn.execute(Q["limited_queues"]).fetchall():
                if queue in per_queue and "queued" in per_queue[queue]:
                    held = _throttled(conn, queue, _limits(text), at, tenant)
                    per_queue[queue]["throttled"] = held
            return [QueueCounts(queue=q, **d) for q, d in sorted(per_queue.items())]

        return await self._read(op)

    async def wait_for_work(self, queues: Sequence[str], *, timeout_s: float) -> None:
        """Wake on an enqueue in this process at once, on other processes' commits by polling.

        A commit made after the previous call for the same queues returned wakes this call at
        once, so work that lands between a worker's empty lease and its wait is never missed
        (the first call for a set of queues returns at once, to start that watch).
        """
        events = []
        for name in queues:
            event = self._local_wakeup.get(name)
            if event is None:
                event = self._local_wakeup[name] = asyncio.Event()
            event.clear()
            events.append(event)
        watch = tuple(sorted(queues))
        deadline = time.monotonic() + timeout_s
        seen = self._seen_version.get(watch)
        version = await self._data_version()
        if seen is None:
            # The first wait for these queues: a commit made between the caller's empty lease
            # and this read would go unseen, so return now; the caller leases again, and from
            # then on every commit after this read wakes it.
            self._seen_version[watch] = version
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            while version == seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                done, _ = await asyncio.wait(
                    waiters, timeout=min(self.poll_s, remaining), return_when="FIRST_COMPLETED"
                )
                version = await self._data_version()
                if done:
                    return
        finally:
            self._seen_version[watch] = version
            for w in waiters:
                w.cancel()

    async def _data_version(self) -> int:
        return int(await self._read(lambda c: c.execute("PRAGMA data_version").fetchone()[0]))

    # -- schedules --------------------------------------------------------------------------
    async def save_schedules(self, schedules: Sequence[Schedule]) -> None:
        if not schedules:
            return
        rows = [schedule_definition(s) for s in schedules]

        def op(conn: sqlite3.Connection) -> None:
            now = time.time()
            for row in rows:
                conn.execute(Q["save_schedule"], row | {"now": now})

        await self._write(op)

    async def list_schedules(self) -> list[Schedule]:
        rows = await self._read(lambda c: c.execute(Q["list_schedules"]).fetchall())
        return [schedule_from_row(r) for r in rows]

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(names))

        def op(conn: sqlite3.Connection) -> list[str]:
            found = [conn.execute(Q["delete_schedule"], (n,)).fetchone() for n in wanted]
            return sorted(row[0] for row in found if row is not None)

        return await self._write(op) if wanted else []

    async def fire_schedule(self, firing: Firing) -> bool:
        params = {"name": firing.name, "after": firing.after, "tick": firing.tick}

        def op(conn: sqlite3.Connection) -> bool:
            # One savepoint of the writer's transaction: the advance and the jobs commit
            # together or not at all.
            if conn.execute(Q["advance_schedule"], params | {"now": time.time()}).rowcount != 1:
                return False
            if firing.jobs:
                _insert(conn, list(firing.jobs))
            return True

        fired = await self._write(op)
        if fired:
            self._wake({j.queue for j in firing.jobs})
        return bool(fired)

    # -- waiting for a job, and finding one by its key ------------------------------------
    def _announce_finished(self, ids: Iterable[int]) -> None:
        """Wake this process's waiters of jobs that may have finished (a refused id only costs
        its waiter one read). Nothing to do, and nothing done, when nobody waits."""
        if self._finishes:
            self._finishes.wake(ids)

    async def wait_for_finish(self, job_id: int, *, timeout_s: float) -> Job | None:
        """Woken at once by a job finished in this process; re-reads every
        ``_FINISH_POLL_S`` for the jobs other processes finish."""
        return await wait_finished(
            job_id,
            timeout_s=timeout_s,
            waiters=self._finishes,
            read=self.get_job,
            poll_s=lambda: _FINISH_POLL_S,
        )

    async def get_job_by_key(self, queue: str, key: str) -> Job | None:
        row = await self._read(lambda c: c.execute(Q["job_by_key"], (queue, key)).fetchone())
        return None if row is None else job_from_row(row, epoch_times=True)

    # -- dead letters by time of death -------------------------------------------------------
    async def list_dead(
        self, where: JobFilter, *, limit: int = 100, before: DeadCursor | None = None
    ) -> list[Job]:
        params = _filter_params(replace(where, state=None)) | {
            "limit": limit,
            "before_us": None if before is None else before.micros,
            "before_id": None if before is None else before.id,
        }
        rows = await self._read(lambda c: c.execute(Q["list_dead"], params).fetchall())
        return [job_from_row(r, epoch_times=True) for r in rows]

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
        stored = None
        if isinstance(limits, FlowLimits) and limits.active:
            stored = jsonio.dumps(limits.to_dict())
        params = {
            "queue": queue,
            "paused": None if paused is None else int(paused),
            "max_depth": None if max_depth is KEEP else max_depth,
            "clear_depth": int(max_depth is None),
            "limits": stored,
            "set_limits": int(limits is not KEEP),
            "now": time.time(),
        }
        row = await self._write(lambda c: c.execute(Q["set_queue"], params).fetchone())
        if paused is False or limits is not KEEP:
            self._wake([queue])  # this process's idle workers; others see the commit
        return _settings(row)

    async def queue_settings(self) -> list[QueueSettings]:
        rows = await self._read(lambda c: c.execute(Q["queue_settings"]).fetchall())
        return [_settings(r) for r in rows]

    async def run_now(self, ids: Sequence[int]) -> list[int]:
        if not ids:
            return []
        payload = json.dumps([int(i) for i in ids])

        def op(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(Q["run_now"], {"now": time.time(), "ids": payload}).fetchall()
            return sorted(r[0] for r in rows)

        moved = await self._write(op)
        self._wake(self._local_wakeup)
        return moved

    async def cancel_where(self, where: JobFilter, *, dry_run: bool = False) -> int:
        params = _filter_params(where) | {"now": time.time()}
        if dry_run:
            return int(
                await self._read(lambda c: c.execute(Q["count_cancellable"], params).fetchone()[0])
            )
        effects = _Effects()

        def op(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(Q["cancel_where"], params).fetchall()
            _finished(conn, [r[0] for r in rows if r[1]], params["now"], effects)
            return [r[0] for r in rows]

        cancelled = await self._write(op)
        self._announce_finished(cancelled)
        self._follow(effects)
        return len(cancelled)

    # -- runs ---------------------------------------------------------------------------------
    async def start_run(self, run: NewRun) -> Run:
        params = {
            "id": run.id,
            "name": run.name,
            "key": run.key,
            "meta": run.meta_json,
            "on_complete": run.on_complete,
            "webhook": run.webhook,
            "tenant": run.tenant,
        }

        def op(conn: sqlite3.Connection) -> Run:
            if conn.execute(Q["insert_run"], params | {"now": time.time()}).rowcount == 1:
                return _run(conn.execute(Q["get_run"], {"id": run.id}).fetchone())
            return _run(conn.execute(Q["run_by_key"], {"key": run.key}).fetchone(), created=False)

        return await self._write(op)

    async def seal_run(self, run_id: str) -> Run | None:
        effects = _Effects()

        def op(conn: sqlite3.Connection) -> Run | None:
            now = time.time()
            sealed = conn.execute(Q["seal_run"], {"id": run_id, "now": now}).fetchone()
            if sealed is not None and sealed[0] == sealed[1]:
                _complete_run(conn, run_id, now, effects)
            row = conn.execute(Q["get_run"], {"id": run_id}).fetchone()
            return None if row is None else _run(row)

        run = await self._write(op)
        self._follow(effects)
        return run

    async def get_run(self, run_id: str) -> Run | None:
        row = await self._read(lambda c: c.execute(Q["get_run"], {"id": run_id}).fetchone())
        return None if row is None else _run(row)

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        limit: int = 100,
        before_id: str | None = None,
        tenant: str | None = None,
    ) -> list[Run]:
        params = {
            "state": None if state is None else str(state),
            "before_id": before_id,
            "limit": limit,
            "tenant": tenant,
        }
        sql = Q["list_runs"] if tenant is None else Q["list_tenant_runs"]
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [_run(r) for r in rows]

    # -- the fleet (forebay.fleet) --------------------------------------------------------------
    async def save_worker(self, worker: WorkerInfo) -> None:
        params = {
            "id": worker.id,
            "info": jsonio.dumps(worker.to_json()),
            "started_at": worker.started_at.timestamp(),
            "expires_at": worker.expires_at.timestamp(),
        }

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(Q["drop_expired_workers"], {"before": time.time() - RECORD_GRACE_S})
            conn.execute(Q["save_worker"], params)

        await self._write(op)

    async def remove_worker(self, worker_id: str) -> None:
        await self._write(lambda c: c.execute(Q["remove_worker"], {"id": worker_id}))

    async def list_workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        params = {"now": time.time() if now is None else now}
        rows = await self._read(lambda c: c.execute(Q["list_workers"], params).fetchall())
        return [WorkerInfo.from_json(jsonio.loads(info)) for (info,) in rows]

    async def throughput(self, *, since: float, queue: str | None = None) -> list[Throughput]:
        params = {"since": minute_of(since), "queue": queue}
        rows = await self._read(lambda c: c.execute(Q["throughput"], params).fetchall())
        return [
            Throughput(
                queue=q,
                minute=datetime.fromtimestamp(minute, UTC),
                completed=completed,
                dead=dead,
                reclaimed=reclaimed,
            )
            for q, minute, completed, dead, reclaimed in rows
        ]

    async def totals(self) -> list[QueueTotals]:
        rows = await self._read(lambda c: c.execute(Q["totals"]).fetchall())
        return [QueueTotals(*row) for row in rows]


def _run(row: Sequence[Any], created: bool = True) -> Run:
    return run_from_values(**dict(zip(_RUN_FIELDS, row, strict=True)), created=created)


def _settings(row: Sequence[Any]) -> QueueSettings:
    return QueueSettings(
        queue=row[0],
        paused=bool(row[1]),
        max_depth=row[2],
        updated_at=datetime.fromtimestamp(row[3], UTC),
        limits=_limits(row[4]),
    )


def _set_wal(conn: sqlite3.Connection, attempts: int = 300) -> str:
    """Switch to WAL. Two processes creating the same file race for the exclusive lock that
    the switch needs, and SQLite answers "locked" at once instead of calling the busy handler;
    so retry briefly (blocking is fine: this runs on a backend thread at open)."""
    for attempt in range(attempts):
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


# -- operations run on the writer thread (inside its transaction) ----------------------------
def _apply_migrations(conn: sqlite3.Connection) -> list[str]:
    conn.execute(Q["create_migrations_table"])
    applied = {row[0] for row in conn.execute(Q["applied_migrations"])}
    done = []
    for version, name, sql in migration_files(_PACKAGE):
        if version in applied:
            continue
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute(Q["record_migration"], {"version": version, "name": name, "now": time.time()})
        done.append(name)
    return done


def _drop_tables(conn: sqlite3.Connection) -> None:
    for statement in _statements(Q["drop_tables"]):
        conn.execute(statement)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.execute runs one at a time)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise BackendError("a migration ends with an incomplete statement")
    return out


class _Effects:
    """What following finished jobs' links did, for the caller to announce once committed:
    the queues that got due jobs, and the jobs finished on the way (cancelled children)."""

    __slots__ = ("finished", "queues")

    def __init__(self) -> None:
        self.queues: set[str] = set()
        self.finished: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.queues or self.finished)


def _by_token(leases: Sequence[Lease]) -> list[list[tuple[str, list[int]]]]:
    """``leases`` in pieces of at most ``_ROWS_PER_OP``, each as (token, job ids) pairs."""
    pieces: list[list[tuple[str, list[int]]]] = []
    for start in range(0, len(leases), _ROWS_PER_OP):
        by_token: dict[str, list[int]] = {}
        for lz in leases[start : start + _ROWS_PER_OP]:
            by_token.setdefault(lz.token, []).append(lz.job_id)
        pieces.append(list(by_token.items()))
    return pieces


_COMPLETED, _DEAD, _RECLAIMED = 0, 1, 2
"""The outcomes a finish counts (their places in count_throughput's counts)."""


def _held_finished(
    conn: sqlite3.Connection, found: Sequence[Any], counts: dict[str, int], linked: list[int]
) -> None:
    """Note what the jobs a ``holding_linked`` row held and just finished: those with links in
    ``linked``, and their number per queue in ``counts`` (its count when they are of one queue,
    as a lease's jobs are; else one more read of their queues)."""
    held, with_links, n, least, greatest = found
    if with_links != "[]":
        linked.extend(json.loads(with_links))
    if least == greatest:
        counts[least] = counts.get(least, 0) + n
        return
    for queue, k in conn.execute(Q["finished_queues"], {"ids": held}):
        counts[queue] = counts.get(queue, 0) + k


def _count_finished(
    conn: sqlite3.Connection, now: float, counts: dict[str, int], outcome: int
) -> None:
    """Count ``counts`` (jobs per queue that just finished as ``outcome``) into the minute of
    ``now`` and the queues' totals: one upsert of each per queue, in the operation that
    finished them, so the counts commit (or not) with the finishes."""
    minute = minute_of(now)
    for queue, n in counts.items():  # most often one (execute costs less than executemany)
        row: list[Any] = [queue, minute, 0, 0, 0]
        row[2 + outcome] = n
        conn.execute(Q["count_throughput"], row)
        conn.execute(Q["count_totals"], row)


class _Enqueue(Mergeable):
    """One caller's enqueue; concurrent callers' enqueues merge into one insert."""

    __slots__ = ("effects", "jobs", "max_depth", "tenant_max_depth")

    def __init__(
        self, jobs: list[NewJob], max_depth: dict[str, int], tenant_max_depth: dict[str, int]
    ) -> None:
        self.jobs = jobs
        self.max_depth = max_depth
        self.tenant_max_depth = tenant_max_depth
        self.effects = _Effects()
        """What the jobs' links did besides (webhook deliveries of jobs stored cancelled)."""

    @staticmethod
    def merge(conn: sqlite3.Connection, ops: list[_Enqueue]) -> list[list[Job]]:
        incoming: dict[str, int] = {}
        caps = _stored_depths(conn, ops)
        # Tenant quotas (only when a caller gives some): what counts is the jobs that will be
        # stored, not those whose key is taken (stored, or by a job given before).
        quotas = any(op.tenant_max_depth for op in ops)
        taken = _taken_keys(conn, ops) if quotas else set()
        per_tenant: dict[str, int] = {}
        for op in ops:
            # Each caller's depth limit counts the jobs of the callers merged before it.
            _check_depth(conn, op.jobs, _tighter(caps, op.max_depth), incoming)
            if quotas:
                fresh = _fresh_tenant_jobs(op.jobs, taken)
                if op.tenant_max_depth:
                    _check_tenants(conn, fresh, op.tenant_max_depth, per_tenant)
                for j in fresh:
                    if j.tenant is not None:
                        per_tenant[j.tenant] = per_tenant.get(j.tenant, 0) + 1
            for j in op.jobs:
                incoming[j.queue] = incoming.get(j.queue, 0) + 1
        effects = _Effects()
        stored = _insert(conn, [j for op in ops for j in op.jobs], effects)
        out, start = [], 0
        for op in ops:
            op.effects = effects
            out.append(stored[start : start + len(op.jobs)])
            start += len(op.jobs)
        return out


def _insert(
    conn: sqlite3.Connection, jobs: list[NewJob], effects: _Effects | None = None
) -> list[Job]:
    """Store ``jobs`` in a few statements whatever their number (see ``_ROWS_PER_OP``): one
    insert of them all, keyed ones whose key is taken skipped, then one read of the new ids.
    Jobs with links (a run, parents, a webhook, a parent job) take :func:`_insert_linked`;
    ``effects`` gets what following their links did."""
    for job in jobs:
        if job.run_id is not None or job.after or job.webhook is not None or job.parent_id:
            return _insert_linked(conn, jobs, _Effects() if effects is None else effects)
    now = time.time()
    if len(jobs) == 1 and jobs[0].key is None:
        row = conn.execute(Q["insert_job_returning"], _row(jobs[0], now)).fetchone()
        conn.execute(Q["insert_payload"], (row[0], jobs[0].payload_json))
        return [jobs[0].stored_as(row[0], datetime.fromtimestamp(now, UTC))]
    return _store_plain(conn, jobs, now)


def _store_plain(conn: sqlite3.Connection, jobs: list[NewJob], now: float) -> list[Job]:
    """Store jobs without links, queued. Jobs without a tenant, flow keys or a trace context
    (the most) go in with the columns they have: each column is one more JSON look-up per
    job."""
    states = [JobState.QUEUED] * len(jobs)
    for j in jobs:
        if j.tenant or j.rate_key or j.concurrency_key or j.fair_key or j.traceparent:
            rows = [_row(j, now) for j in jobs]
            return _store(conn, jobs, Q["insert_flow_jobs"], rows, now, states)
    rows = [_row(j, now, flow=False) for j in jobs]
    return _store(conn, jobs, Q["insert_jobs"], rows, now, states)


def _store(
    conn: sqlite3.Connection,
    jobs: list[NewJob],
    sql: str,
    rows: list[tuple[Any, ...]],
    now: float,
    states: list[JobState],
) -> list[Job]:
    """Insert ``rows`` (of ``jobs``) with ``sql``; return the jobs stored (in ``states``) or
    found by their key (``created=False``), in order."""
    created_at = datetime.fromtimestamp(now, UTC)
    before = conn.execute(Q["next_job_id"]).fetchone()[0]
    conn.execute(sql, {"jobs": jsonio.dumps(rows)})
    # AUTOINCREMENT under the write lock: the new rows are those past `before`, in the order
    # they were given; a keyed job that is not among them found its key taken.
    fresh = jsonio.loads(conn.execute(Q["jobs_after"], {"after": before}).fetchone()[0])
    results: list[Job | None] = []
    payloads: list[tuple[int, str]] = []
    k = 0
    for job, state in zip(jobs, states, strict=True):
        if k < len(fresh) and fresh[k][1] == job.queue and fresh[k][2] == job.key:
            results.append(job.stored_as(fresh[k][0], created_at, state))
            payloads.append((fresh[k][0], job.payload_json))
            k += 1
        else:
            results.append(None)
    if payloads:
        conn.execute(Q["insert_payloads"], {"payloads": jsonio.dumps(payloads)})
    # Taken keys are read once the payloads are in (a key may be taken within this batch).
    return [
        job_from_row(
            conn.execute(Q["job_by_key"], (job.queue, job.key)).fetchone(),
            created=False,
            epoch_times=True,
        )
        if stored is None
        else stored
        for job, stored in zip(jobs, results, strict=True)
    ]


def _insert_linked(conn: sqlite3.Connection, jobs: list[NewJob], effects: _Effects) -> list[Job]:
    """Store jobs some of which have links (see the Backend's ``enqueue``): their runs must
    take them and their parents exist (else the whole call is refused); each is stored
    waiting, queued or, when a parent already failed, cancelled, which is a finish."""
    _check_runs(conn, jobs)
    now = time.time()
    if not any(job.after or job.webhook is not None or job.parent_id for job in jobs):
        # Jobs that only join a run: the plain insert stores run_id.
        stored = _store_plain(conn, jobs, now)
        _join_runs(conn, stored)
        return stored
    parents = _parent_states(conn, jobs)
    states: list[JobState] = []
    rows = []
    for job in jobs:
        state, error = _initial_state(job, parents)
        states.append(state)
        rows.append(
            (
                *_row(job, now),
                state.value,
                jsonio.dumps(list(job.after)) if job.after else None,
                None if job.after_policy == "completed" else job.after_policy,
                job.webhook,
                job.parent_id,
                now if error else None,
                error,
                DEPENDENCY_FAILED if error else None,
            )
        )
    stored = _store(conn, jobs, Q["insert_linked_jobs"], rows, now, states)
    deps: list[tuple[int, int]] = []
    failed: list[int] = []
    for i, kept in enumerate(stored):
        if not kept.created:
            continue
        if kept.state is JobState.WAITING:
            deps.extend((p, kept.id) for p in kept.after if parents[p] in _UNFINISHED)
        elif kept.state is JobState.CANCELLED:
            failed.append(kept.id)
            stored[i] = replace(
                kept,
                finished_at=kept.created_at,
                error=rows[i][_ROW_ERROR],
                error_type=DEPENDENCY_FAILED,
            )
    if deps:
        conn.execute(Q["insert_deps"], {"deps": jsonio.dumps(deps)})
    _join_runs(conn, stored)
    if failed:
        _finished(conn, failed, now, effects)
    return stored


def _join_runs(conn: sqlite3.Connection, stored: list[Job]) -> None:
    """Count the jobs just stored (not those found by their key) into their runs' totals."""
    joined: dict[str, int] = {}
    for job in stored:
        if job.created and job.run_id is not None:
            joined[job.run_id] = joined.get(job.run_id, 0) + 1
    for run_id, n in sorted(joined.items()):
        conn.execute(Q["run_joined"], {"id": run_id, "total": n})


def _check_runs(conn: sqlite3.Connection, jobs: list[NewJob]) -> None:
    """Refuse jobs naming a run that does not exist (UnknownRun), or one that is no longer
    open, unless their parent job is a running job of that run (RunSealed)."""
    states: dict[str, str] = {}
    for job in jobs:
        run_id = job.run_id
        if run_id is None:
            continue
        state = states.get(run_id)
        if state is None:
            row = conn.execute(Q["run_state"], {"id": run_id}).fetchone()
            if row is None:
                raise UnknownRun(run_id)
            state = states[run_id] = row[0]
        if state == RunState.OPEN:
            continue
        parent = None
        if job.parent_id is not None:
            parent = conn.execute(Q["job_run"], {"id": job.parent_id}).fetchone()
        if parent is None or parent[0] != run_id:
            raise RunSealed(run_id, state)


def _parent_states(conn: sqlite3.Connection, jobs: list[NewJob]) -> dict[int, str]:
    """The state of every parent the jobs name; UnknownParent when one does not exist."""
    wanted = sorted({p for job in jobs for p in job.after})
    if not wanted:
        return {}
    found = dict(conn.execute(Q["parents"], {"ids": json.dumps(wanted)}).fetchall())
    missing = [p for p in wanted if p not in found]
    if missing:
        raise UnknownParent(missing)
    return found


def _initial_state(job: NewJob, parents: dict[int, str]) -> tuple[JobState, str | None]:
    """The state ``job`` is stored in, and the error of one stored cancelled."""
    waits = False
    for p in job.after:
        state = parents[p]
        if state in _UNFINISHED:
            waits = True
        elif state != "completed" and job.after_policy == "completed":
            return JobState.CANCELLED, f"parent job {p} ended {state}"
    return (JobState.WAITING if waits else JobState.QUEUED), None


def _finished(conn: sqlite3.Connection, ids: list[int], now: float, effects: _Effects) -> None:
    """Follow the links of jobs that just finished, in the operation that finished them:
    their runs' counts (and completion), their webhooks, their waiting children (released, or
    cancelled, which are finishes in turn: followed the same way, down the chain), noted in
    ``effects``."""
    while ids:
        found = conn.execute(Q["finished_links"], {"ids": json.dumps(ids)}).fetchone()[0]
        rows = jsonio.loads(found)
        deliveries = [_job_webhook(row) for row in rows if row[4] is not None]
        if deliveries:
            _insert(conn, deliveries)
            effects.queues.add(WEBHOOK_QUEUE)
        per_run: dict[str, dict[str, int]] = {}
        for row in rows:
            if row[2] is not None:
                counts = per_run.setdefault(row[2], {"completed": 0, "dead": 0, "cancelled": 0})
                counts[row[1]] += 1
        for run_id, counts in sorted(per_run.items()):
            ended = conn.execute(Q["run_finished"], counts | {"id": run_id}).fetchone()
            if ended is not None and ended[0] == RunState.SEALED and ended[1] == ended[2]:
                _complete_run(conn, run_id, now, effects)
        parents = {row[0]: row[1] for row in rows if row[3]}
        ids = _children_done(conn, parents, now, effects) if parents else []
        effects.finished.extend(ids)


def _children_done(
    conn: sqlite3.Connection, ended: dict[int, str], now: float, effects: _Effects
) -> list[int]:
    """The waiting children of the parents that ``ended`` (id: final state): each is queued
    once no parent is unfinished, or cancelled when a parent failed and its policy is
    ``completed``. Return the ids of those cancelled."""
    taken = conn.execute(Q["take_children"], {"ids": json.dumps(sorted(ended))}).fetchall()
    by_child: dict[int, list[int]] = {}
    for parent, child in taken:
        by_child.setdefault(child, []).append(parent)
    cancelled = []
    for child, parents in sorted(by_child.items()):
        waiting = conn.execute(Q["waiting_child"], {"id": child}).fetchone()
        if waiting is None:  # cancelled meanwhile
            continue
        policy, unfinished = waiting
        failed = sorted(p for p in parents if ended[p] != "completed")
        if failed and policy != "always":
            error = f"parent job {failed[0]} ended {ended[failed[0]]}"
            params = {"id": child, "now": now, "error": error, "error_type": DEPENDENCY_FAILED}
            conn.execute(Q["fail_child"], params)
            cancelled.append(child)
        elif unfinished == 0:
            released = conn.execute(Q["release_child"], {"id": child, "now": now}).fetchone()
            effects.queues.add(released[0])
    return cancelled


def _job_webhook(row: Sequence[Any]) -> NewJob:
    """The delivery job of a finished job's webhook (an entry of ``finished_links``)."""
    job_id, state, run_id, _, url, queue, key, attempt, error, error_type, result, finished_at = row
    data = job_summary(
        job_id=job_id,
        queue=queue,
        state=state,
        key=key,
        run_id=run_id,
        attempt=attempt,
        error=error,
        error_type=error_type,
        result=None if result is None else jsonio.loads(result),
        finished_at=float(finished_at),
    )
    return NewJob.create(
        WEBHOOK_QUEUE, webhook_payload(url, JOB_WEBHOOK_TYPES[state], data), parsed=True
    )


def _complete_run(conn: sqlite3.Connection, run_id: str, now: float, effects: _Effects) -> None:
    """A sealed run whose jobs all finished completes, and its completion jobs are stored
    (idempotent by key; no max_depth refuses them)."""
    row = conn.execute(Q["complete_run"], {"id": run_id, "now": now}).fetchone()
    if row is None:
        return
    (_, name, key, meta, on_complete, webhook, total, completed, dead, cancelled) = row[:10]
    summary = run_summary(
        run_id=run_id,
        name=name,
        key=key,
        meta=jsonio.loads(meta),
        total=total,
        completed=completed,
        dead=dead,
        cancelled=cancelled,
        created_at=row[10],
        sealed_at=row[11],
        completed_at=row[12],
    )
    jobs = []
    if on_complete is not None:
        # the run's tenant's job (no quota refuses it, as no max_depth does)
        jobs.append(
            NewJob.create(
                on_complete,
                summary,
                key=f"run:{run_id}:complete",
                tenant=row[13],
                parsed=True,
            )
        )
    if webhook is not None:
        hook = webhook_payload(webhook, RUN_COMPLETED, summary)
        jobs.append(NewJob.create(WEBHOOK_QUEUE, hook, key=f"run:{run_id}:webhook", parsed=True))
    if jobs:
        _insert(conn, jobs)
        effects.queues.update(job.queue for job in jobs)


def _row(j: NewJob, now: float, *, flow: bool = True) -> tuple[Any, ...]:
    """A job's fields as insert_jobs takes them (``flow``: and as insert_flow_jobs does)."""
    run_at = now if j.run_at is None else j.run_at
    if not flow:
        return (j.queue, j.key, j.priority, run_at, j.run_id, now, now, j.max_attempts, j.timeout_s)
    return (
        j.queue,
        j.key,
        j.priority,
        run_at,
        j.run_id,
        now,
        now,
        j.max_attempts,
        j.timeout_s,
        j.tenant,
        j.rate_key,
        j.concurrency_key,
        j.fair_key,
        j.traceparent,
    )


_ROW_ERROR = 20
"""Where a linked job's error is in its row (``_row`` and then insert_linked_jobs' fields)."""


def _stored_depths(conn: sqlite3.Connection, ops: list[_Enqueue]) -> dict[str, int]:
    """The stored max_depth of the queues these enqueues write to (one indexed read, in the
    enqueue's own transaction: the limit every producer obeys)."""
    queues = sorted({j.queue for op in ops for j in op.jobs})
    rows = conn.execute(Q["stored_depths"], {"queues": json.dumps(queues)}).fetchall()
    return {queue: cap for queue, cap in rows}


def _tighter(stored: dict[str, int], given: dict[str, int]) -> dict[str, int]:
    """The stored limits, and a caller's own where tighter."""
    if not given:
        return stored
    caps = dict(stored)
    for queue, cap in given.items():
        caps[queue] = min(cap, caps.get(queue, cap))
    return caps


def _check_depth(
    conn: sqlite3.Connection,
    jobs: list[NewJob],
    max_depth: dict[str, int],
    pending: dict[str, int] | None = None,
) -> None:
    for queue, cap in max_depth.items():
        incoming = sum(1 for j in jobs if j.queue == queue)
        if not incoming:
            continue
        depth = conn.execute(Q["depth"], {"queue": queue, "cap": cap}).fetchone()[0]
        if depth + (pending or {}).get(queue, 0) + incoming > cap:
            raise QueueFull(queue, cap)


def _taken_keys(conn: sqlite3.Connection, ops: list[_Enqueue]) -> set[tuple[str, str]]:
    """The (queue, key) of the keyed jobs of ``ops`` with a tenant already stored (one indexed
    read, in the enqueue's transaction)."""
    keys = sorted({(j.queue, j.key) for op in ops for j in op.jobs if j.key and j.tenant})
    if not keys:
        return set()
    rows = conn.execute(Q["taken_keys"], {"keys": json.dumps(keys)}).fetchall()
    return {(queue, key) for queue, key in rows}


def _fresh_tenant_jobs(jobs: list[NewJob], taken: set[tuple[str, str]]) -> list[NewJob]:
    """The jobs with a tenant of ``jobs`` that will be stored: not those whose key is in
    ``taken``, which gets the keys of ``jobs`` (a key given twice is stored once)."""
    fresh = []
    for j in jobs:
        if j.key is not None:
            if (j.queue, j.key) in taken:
                continue
            taken.add((j.queue, j.key))
        if j.tenant is not None:
            fresh.append(j)
    return fresh


def _check_tenants(
    conn: sqlite3.Connection,
    jobs: list[NewJob],
    quotas: dict[str, int],
    pending: dict[str, int],
) -> None:
    """TenantQuotaFull when a tenant of ``jobs`` would hold more unfinished jobs (every queue)
    than its quota (``"*"``: every tenant without its own), counting ``pending`` (the jobs of
    the callers merged before) as held."""
    incoming: dict[str, int] = {}
    for j in jobs:
        if j.tenant is not None:
            incoming[j.tenant] = incoming.get(j.tenant, 0) + 1
    for tenant, n in sorted(incoming.items()):
        cap = quotas.get(tenant, quotas.get("*"))
        if cap is None:
            continue
        held = conn.execute(Q["tenant_depth"], {"tenant": tenant, "cap": cap}).fetchone()[0]
        if held + pending.get(tenant, 0) + n > cap:
            raise TenantQuotaFull(tenant, cap)


# -- flow control (forebay.flow: the lease plan) ---------------------------------------------
def _pick(
    conn: sqlite3.Connection, queue: str, limit: int, now: float, limited: set[str]
) -> tuple[str, FlowLimits | None]:
    """The plain lease's pick (a JSON array of ids), or the queue's limits when it has some
    (the flow path's to pick). ``limited``: the queues last seen with limits, kept up to date;
    theirs are looked up first, as the plain pick walks a queue's whole backlog before it
    finds out that the queue has limits."""
    if queue in limited:
        row = conn.execute(Q["queue_flow"], {"queue": queue}).fetchone()
        if row is not None and row[1] is not None:
            return "[]", None if row[0] else _limits(row[1])
        limited.discard(queue)
    ids: str = conn.execute(
        Q["lease_pick"], {"queue": queue, "now": now, "limit": limit}
    ).fetchone()[0]
    if ids != "[]":
        return ids, None
    # Nothing on the plain path: paused, no due job, or flow limits to obey.
    row = conn.execute(Q["queue_flow"], {"queue": queue}).fetchone()
    if row is None or row[0] or row[1] is None:
        return ids, None
    limited.add(queue)
    return ids, _limits(row[1])


_PARSED_LIMITS: dict[str, FlowLimits] = {}


def _limits(text: str | None) -> FlowLimits:
    """Stored limits (JSON text) as FlowLimits, parsed once per distinct text."""
    if text is None:
        return NO_LIMITS
    limits = _PARSED_LIMITS.get(text)
    if limits is None:
        if len(_PARSED_LIMITS) > 256:
            _PARSED_LIMITS.clear()
        limits = _PARSED_LIMITS[text] = FlowLimits.from_dict(jsonio.loads(text))
    return limits


def _flow_state(
    conn: sqlite3.Connection, queue: str, limits: FlowLimits, now: float, *, keys: bool = True
) -> FlowState:
    """The buckets and running counts a lease of ``queue`` plans with (fair markers apart;
    without ``keys``, the rate keys' buckets too: see :func:`_key_buckets`)."""
    state = FlowState()
    if not keys:
        if limits.rate is not None:
            row = conn.execute(Q["flow_queue_bucket"], {"queue": queue, "now": now}).fetchone()
            state.queue_tat = None if row is None else row[0]
    elif limits.rate is not None or limits.rate_per_key is not None:
        for kind, key, value in conn.execute(Q["flow_buckets"], {"queue": queue, "now": now}):
            if kind == "rate":
                state.queue_tat = value
            else:
                state.key_tats[key] = value
    if limits.concurrency is not None:
        state.running = conn.execute(Q["running"], {"queue": queue}).fetchone()[0]
    if limits.concurrency_per_key is not None:
        rows = conn.execute(Q["running_per_key"], {"queue": queue}).fetchall()
        state.running_per_key = dict(rows)
    return state


def _key_buckets(
    conn: sqlite3.Connection, queue: str, now: float, candidates: Iterable[Candidate]
) -> dict[str, float]:
    """The buckets of the rate keys among ``candidates`` (a lease that takes all it asked for
    plans with those alone: it neither waits nor leaves keys out)."""
    keys = json.dumps(list({c.rate_key for c in candidates if c.rate_key is not None}))
    return dict(conn.execute(Q["flow_key_buckets"], {"queue": queue, "now": now, "keys": keys}))


def _fair_turns(conn: sqlite3.Connection, queue: str, state: FlowState) -> list[str | None]:
    """The fair keys with queued jobs (None: jobs without one), least recently served first
    (their markers read into ``state.served``)."""
    keys: list[str | None] = [r[0] for r in conn.execute(Q["fair_keys"], {"queue": queue})]
    if conn.execute(Q["fair_none"], {"queue": queue}).fetchone()[0]:
        keys.append(None)
    if not keys:
        return []
    stored = json.dumps(["" if k is None else k for k in keys])
    for key, value in conn.execute(Q["fair_markers"], {"queue": queue, "keys": stored}):
        state.served[key or None] = value
    return sorted(keys, key=lambda k: (state.served.get(k, -math.inf), k or ""))


def _flow_pick(
    conn: sqlite3.Connection, queue: str, limits: FlowLimits, limit: int, now: float
) -> tuple[str, float | None]:
    """The jobs a lease of up to ``limit`` takes from ``queue`` under ``limits`` (a JSON array
    of ids, in lease order), and the plan's ``throttled_until``; the buckets and fair markers
    are written back. Inside the lease's writer operation.

    Candidates are read per group (each priority with aging, each fair key with fair), best
    first, a few per group; should the plan come out short while a group had more, the keys
    the plan used up (no token left, at the cap) are left out of the next read and the groups
    give more, at most a few rounds.

    With a rate per key, the keys' buckets are read at first for the candidates' keys alone:
    every other key's matters only to a plan that comes out short (when their tokens free, and
    which keys to leave out), and then they are all read and the plan made again."""
    partial = limits.rate_per_key is not None
    state = _flow_state(conn, queue, limits, now, keys=not partial)
    room, wait = budget(limits, state, limit, now)
    if room <= 0:
        return "[]", wait
    turns = _fair_turns(conn, queue, state) if limits.fair else [None]
    if not turns:
        return "[]", None
    priorities: list[int | None] = [None]
    if limits.aging_s is not None:
        priorities = [r[0] for r in conn.execute(Q["queued_priorities"], {"queue": queue})]
    aging = limits.aging_s is not None
    sql = _CANDIDATES[(limits.fair, aging)]
    # Rate keys without a token are read at first (the plan says when their token frees),
    # then left out with those the plan uses up, should their jobs crowd the others out.
    no_token: set[str] = set()
    blocked, full = blocked_keys(limits, state, now)
    candidates: dict[int, Candidate] = {}
    keys = room if limits.fair else 1  # the fair keys read, in turn order
    per = -(-room // min(room, len(turns))) if limits.fair else room
    out = None
    for _ in range(_FLOW_ROUNDS):
        more = keys < len(turns)
        params = {
            "queue": queue,
            "now": now,
            "n": per,
            "no_token": json.dumps(sorted(no_token)),
            "full": json.dumps(sorted(full)),
        }
        for fair_key in turns[:keys]:
            for priority in priorities:
                query = _UNKEYED[aging] if limits.fair and fair_key is None else sql
                rows = conn.execute(
                    query, params | {"fair_key": fair_key, "priority": priority}
                ).fetchall()
                more = more or len(rows) >= per
                for row in rows:
                    candidates[row[0]] = Candidate(*row)
        if partial:
            state.key_tats = _key_buckets(conn, queue, now, candidates.values())
        out = plan(limits, state, candidates.values(), limit=limit, now=now)
        if partial and len(out.ids) < limit:
            partial = False
            state.key_tats = _flow_state(conn, queue, limits, now).key_tats
            blocked = blocked_keys(limits, state, now)[0]
            out = plan(limits, state, candidates.values(), limit=limit, now=now)
        if len(out.ids) >= room or not more:
            break
        used_up = _used_up(limits, state, now, [candidates[i] for i in out.ids])
        used_up[0].update(blocked)
        if used_up[0] <= no_token and used_up[1] <= full:
            per, keys = per * 2, keys * 2
        no_token |= used_up[0]
        full |= used_up[1]
    assert out is not None
    _save_flow(conn, queue, out)
    return json.dumps(out.ids), out.throttled_until


def _save_flow(conn: sqlite3.Connection, queue: str, out: Plan) -> None:
    """Write back the buckets and fair markers a plan moved."""
    rows = [(v, queue, "key", k) for k, v in out.key_tats.items()]
    if out.queue_tat is not None:
        rows.append((out.queue_tat, queue, "rate", ""))
    rows.extend((v, queue, "fair", "" if k is None else k) for k, v in out.served.items())
    # Most buckets and markers are there already: updating them costs half what an upsert
    # does; should some be new, the upsert writes them all.
    if rows and conn.executemany(Q["update_flow"], rows).rowcount < len(rows):
        conn.executemany(Q["save_flow"], rows)


_FLOW_ROUNDS = 6
_CANDIDATES = {  # (fair, aging): the candidate query, per fair key and / or priority
    (False, False): Q["flow_candidates"],
    (False, True): Q["flow_candidates_priority"],
    (True, False): Q["flow_candidates_fair"],
    (True, True): Q["flow_candidates_fair_priority"],
}
_UNKEYED = {False: Q["flow_candidates_unkeyed"], True: Q["flow_candidates_unkeyed_priority"]}
"""With fair: the candidate query of the jobs without a fair key, by aging."""


def _used_up(
    limits: FlowLimits, state: FlowState, now: float, taken: list[Candidate]
) -> tuple[set[str], set[str]]:
    """The rate keys without a token, and the concurrency keys at their cap, once ``taken``
    have started."""
    no_token: set[str] = set()
    full: set[str] = set()
    if limits.rate_per_key is not None:
        spent: dict[str, int] = {}
        for c in taken:
            if c.rate_key is not None:
                spent[c.rate_key] = spent.get(c.rate_key, 0) + 1
        rate = limits.rate_per_key
        no_token = {k for k, n in spent.items() if rate.available(state.key_tats.get(k), now) <= n}
    if limits.concurrency_per_key is not None:
        running: dict[str, int] = dict(state.running_per_key)
        for c in taken:
            if c.concurrency_key is not None:
                running[c.concurrency_key] = running.get(c.concurrency_key, 0) + 1
        cap = limits.concurrency_per_key
        full = {k for k, n in running.items() if n >= cap}
    return no_token, full


def _throttled(
    conn: sqlite3.Connection, queue: str, limits: FlowLimits, now: float, tenant: str | None
) -> int:
    """The due queued jobs a lease of ``queue`` at ``now`` would hold back (counts())."""
    state = _flow_state(conn, queue, limits, now)
    room, _ = budget(limits, state, 1, now)
    no_token, full = blocked_keys(limits, state, now)
    params = {
        "queue": queue,
        "now": now,
        "tenant": tenant,
        "no_token": json.dumps(sorted(no_token)),
        "full": json.dumps(sorted(full)),
    }
    due, held = conn.execute(Q["due_queued"], params).fetchone()
    return int(due if room <= 0 else held)
