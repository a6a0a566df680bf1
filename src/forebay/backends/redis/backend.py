"""The Redis backend: Streams with one consumer group, Lua scripts for every transition.

One module (~700 lines) on purpose: it is one concern, the Python side of every transition
(the logic itself is in ``lua/``), and it reads best beside the key layout it drives.

How jobs move (key names in :mod:`forebay.backends.redis.keys`, scripts in ``lua/``, the
whole picture in ``docs/redis.md``):

* **Enqueue** stores the job's hash and, when it is due and not earlier than the last entry
  of its (queue, priority) stream, appends an entry to that stream; every other queued job
  (scheduled, in retry backoff, deferred, put back, enqueued with a past ``run_at``) waits in
  the level's sorted set scored by ``run_at``. Concurrent enqueue calls share one script call
  (group commit); each caller still gets its own answer, its own ``QueueFull``.
* **Lease** is one script: it walks the priority levels from high to low and, per level,
  merges the due members of the sorted set with the stream's undelivered entries (read with
  ``XREADGROUP``) by (``run_at``, id): the order DESIGN §3.6 promises, exactly. Each leased job
  gets a lease token and a deadline in the ``leases`` sorted set.
* **Flow control** (:mod:`forebay.flow`): a job that carries a flow key waits in its *lane*
  (a sorted set per priority and keys) instead of a stream; a queue with stored limits, or with
  lanes, is leased by the same script's flow path, which reads the levels' due prefixes and
  walks the lanes by their first job (``P:q:Q:heads:R``, or per fair key with ``fair``),
  skipping the blocked ones, then writes back the rate buckets, the fair markers and the
  per-key running counts. A queue with neither takes the plain path below, unchanged.
* **A lease is the job's own deadline**: ``extend`` (the worker's heartbeat) moves it;
  ``reclaim_expired`` puts back the jobs whose deadline passed. Not ``XAUTOCLAIM``'s idle time,
  which is one visibility timeout for all jobs: a long job that heartbeats is never delivered
  twice, and a crashed worker's jobs come back after their own lease.
* **Settling** (complete, dead letter, retry, defer, release) checks the token, then ``XACK`` +
  ``XDEL`` the entry: a stream holds only jobs that wait or run, so it does not grow with
  history. Finished jobs stay in their hash (status, dead letters, keys) until pruned.
* **Waiting**: ``wait_for_work`` asks (one script) whether anything is due; if not it blocks in
  ``XREAD`` on the queue's streams, from their group's last delivered id, and on a small wake
  stream: an idle worker starts a new job within a millisecond of its enqueue, even one made
  in another process, and wakes when a scheduled job comes due.
* **Waiting for a job to finish**: the scripts that finish jobs publish their ids, and a
  process that waits subscribes (:mod:`~forebay.backends.redis.subscriber`).

* **The fleet** (:mod:`forebay.fleet`): worker records are one hash (id -> JSON) beside a
  sorted set of their deadlines, so a listing reads only the records that hold; the scripts
  that complete, dead-letter and reclaim jobs count them per queue in a hash per minute (and
  in a hash of totals) in the same script, so only transitions that applied are counted.

* **Schedules** are two hashes (definitions, last ticks); ``fire_schedule.lua`` moves a last
  tick and stores the tick's jobs in one script (its source ends with ``enqueue.lua``).

Batches cross to the scripts as JSON (one argument, decoded by cjson) and large answers come
back as JSON: thousands of arguments or nested replies would cost more to pack and parse than
the work itself. Durability is the server's: at open, a warning is logged when it can lose
jobs (eviction policy, persistence off). Scripts compute key names from the prefix, so Redis
Cluster is not supported (a single primary, with replicas, is).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from forebay.backends.base import Capabilities, Leased, PruneSpec, refuse_connection
from forebay.backends.finishes import FinishWaiters, wait_finished
from forebay.backends.redis.keys import LAYOUT_VERSION, Keys, lua_prelude
from forebay.backends.redis.subscriber import FinishSubscriber
from forebay.backends.rows import job_from_hash
from forebay.backends.schedule_rows import (
    SCHEDULE_COLUMNS,
    schedule_definition,
    schedule_from_row,
)
from forebay.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    EnqueueError,
    InvalidPayload,
    QueueFull,
    RunSealed,
    TenantQuotaFull,
    UnknownParent,
    UnknownRun,
)
from forebay.fleet import RECORD_GRACE_S, QueueTotals, Throughput, WorkerInfo, minute_of
from forebay.flow import FlowLimits
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
)
from forebay.job import (
    Retry as RetryJob,
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
    run_from_values,
)
from forebay.schedules import Firing, Schedule
from forebay.urls import redacted

__all__ = ["RedisBackend"]

log = logging.getLogger("forebay.backends.redis")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_SCRIPTS = (
    "enqueue",
    "lease",
    "extend",
    "progress",
    "complete",
    "retry",
    "dead_letter",
    "defer",
    "release",
    "reclaim",
    "cancel",
    "replay",
    "purge",
    "prune",
    "tidy",
    "list",
    "counts",
    "poll",
    "fire_schedule",
    "index_queue_done",
    "set_queue",
    "queue_settings",
    "run_now",
    "start_run",
    "seal_run",
    "prune_runs",
    "save_worker",
    "workers",
    "prune_minutes",
)
_DEAD_CHUNK = 500
"""Dead-set entries read per step of a dead-letter listing."""
_RUN_CHUNK = 200
"""Run ids read per step of a runs listing."""
_COMPOSED = {"fire_schedule": ("fire_schedule", "enqueue")}
"""Scripts whose source is several files, in order (after the prelude and the helpers)."""
_COUNTED = ("waiting", "queued", "running", "completed", "dead", "cancelled")
_SCRIPT_JOBS = 2000
"""Most jobs one script call stores or settles: bounds how long one call holds the server."""
_MAX_BLOCK_S = 1.0
"""Longest single XREAD block; wait_for_work loops (and re-polls) for longer timeouts."""
_SUBSCRIBE_WAIT_S = 2.0
"""Longest a first wait for a finish waits for its subscription before falling back to polling."""
_FINISH_POLL_S = 0.5
"""How often a waiter re-reads its job while the finish subscription is down."""


@cache
def script_sources() -> dict[str, str]:
    """Each script's full source: the key prelude, the shared helpers, then the script."""
    folder = resources.files("forebay.backends.redis").joinpath("lua")
    common = folder.joinpath("common.lua").read_text(encoding="utf-8")
    head = lua_prelude() + _lua_constants() + common
    return {
        name: head
        + "".join(
            folder.joinpath(f"{part}.lua").read_text(encoding="utf-8")
            for part in _COMPOSED.get(name, (name,))
        )
        for name in _SCRIPTS
    }


def _lua_constants() -> str:
    """The names of :mod:`forebay.runs` the scripts use, as Lua (after the key prelude)."""
    types = ", ".join(f"{state} = {json.dumps(t)}" for state, t in JOB_WEBHOOK_TYPES.items())
    return (
        f"local WEBHOOK_QUEUE, RUN_COMPLETED = {json.dumps(WEBHOOK_QUEUE)}, "
        f"{json.dumps(RUN_COMPLETED)}\n"
        f"local DEPENDENCY_FAILED = {json.dumps(DEPENDENCY_FAILED)}\n"
        f"local JOB_WEBHOOK_TYPES = {{{types}}}\n"
    )


def _enqueue_row(j: NewJob) -> list[object]:
    """A job as ``enqueue.lua`` takes it (its own limits only when it has one or a link, its
    links only when it has one)."""
    row: list[object] = [
        j.queue,
        j.payload_json,
        False if j.key is None else j.key,
        j.priority,
        False if j.run_at is None else _ts(j.run_at),
        False if j.run_id is None else j.run_id,
        _flow_fields(j),
    ]
    linked = bool(j.after) or j.webhook is not None or j.parent_id is not None
    if linked or j.max_attempts is not None or j.timeout_s is not None:
        row += [j.max_attempts or False, j.timeout_s or False]
    if linked:
        row += [
            [str(i) for i in j.after] or False,
            j.after_policy,
            False if j.webhook is None else j.webhook,
            False if j.parent_id is None else str(j.parent_id),
        ]
    return row


def _flow_fields(j: NewJob) -> list[str | bool] | bool:
    """A job's tenant, flow keys and traceparent as ``enqueue.lua`` takes them (False: none of
    them)."""
    if (
        j.tenant is None
        and j.rate_key is None
        and j.concurrency_key is None
        and j.fair_key is None
        and j.traceparent is None
    ):
        return False
    values = (j.tenant, j.rate_key, j.concurrency_key, j.fair_key, j.traceparent)
    return [False if v is None else v for v in values]


def _ts(value: float) -> str:
    """Epoch seconds as an exact decimal string (Lua would round a number to 14 digits)."""
    return repr(float(value))


def _json(value: object) -> str:
    """A batch argument of the scripts (they read it with cjson.decode)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _answer(raw: str) -> Any:
    """A script's JSON answer (cjson.encode)."""
    return json.loads(raw)


def translate(exc: Exception, where: str | None = None) -> BackendError:
    """A redis-py (or socket) error as forebay's: unreachable, refused credentials, or failed.

    ``where`` is the server's URL, its password redacted, for the refused-credentials message."""
    if isinstance(exc, _REFUSED):
        at = f" at {where}" if where else ""
        return BackendError(
            f"Redis{at} refused the credentials: {exc}; check the user and password in the URL"
        )
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return BackendUnavailable(f"Redis is unreachable: {exc}")
    return BackendError(f"Redis failed: {exc}")


_REFUSED = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)
"""Refused credentials: redis-py counts them as connection errors, but waiting never helps."""


class _Refused(Exception):
    """Carries a refused-credentials error past redis-py's retry loop."""

    def __init__(self, cause: redis_errors.ConnectionError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Retry(Retry):
    """redis-py's retry, except that refused credentials (``NOAUTH``, ``WRONGPASS``) are
    raised at once: the server answered, and asking again gets the same answer."""

    async def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        async def once() -> Any:
            try:
                return await do()
            except _REFUSED as exc:
                raise _Refused(exc) from exc

        try:
            return await super().call_with_retry(once, fail, *args, **kwargs)
        except _Refused as refused:
            raise refused.cause from None


def retry_policy(reconnect_s: float) -> Retry:
    """Retry a command on connection errors for about ``reconnect_s`` (backoff up to 1 s);
    refused credentials are not retried."""
    base_s, cap_s = 0.05, 1.0
    retries, waited = 0, 0.0
    while waited < reconnect_s:
        retries += 1
        waited += min(cap_s, base_s * 2**retries) * 0.75  # EqualJitterBackoff's mean
    return _Retry(EqualJitterBackoff(cap=cap_s, base=base_s), retries)


@dataclass(slots=True)
class _EnqueueCall:
    jobs: list[NewJob]
    depth: list[tuple[str, int, int]]  # (queue, max_depth, jobs of that queue in this call)
    tenant_quotas: dict[str, int] | None = None  # tenant ('*': any other) -> max_depth


class RedisBackend:
    """Jobs in Redis Streams. See the module docstring; build it with :meth:`from_url`."""

    capabilities = Capabilities(
        name="redis",
        cross_process_wakeup=True,
        transactional_enqueue=False,
        cross_process_finish_wakeup=True,
    )

    def __init__(
        self, url: str = DEFAULT_URL, *, prefix: str = "forebay", reconnect_s: float = 10.0
    ) -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ConfigError(
                f"Redis key prefix {prefix!r} must be 1-100 letters, digits or - _ . :"
            )
        if not math.isfinite(reconnect_s) or reconnect_s < 0:
            raise ConfigError("reconnect_s must be a non-negative number of seconds")
        try:
            parse_url(url)
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL: {exc}") from None
        self.url = url
        self.prefix = prefix
        self.reconnect_s = reconnect_s
        self.keys = Keys(prefix)
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        # Concurrent enqueue calls share one script call. One in flight at a time: Redis runs
        # scripts one after another anyway, and a lone caller flushes its own call at once.
        self._enqueuer: GroupCommit[_EnqueueCall, list[Job]] = GroupCommit(
            "redis-enqueue",
            self._write_enqueues,
            weight=lambda call: len(call.jobs),
            max_weight=_SCRIPT_JOBS,
            max_in_flight=1,
            # A call whose jobs cannot be encoded fails alone: nothing was sent for its group,
            # which is written again in halves.
            wrote_nothing=lambda exc: isinstance(exc, InvalidPayload),
            inline_first=True,
        )
        self.applied_on_open: list[str] = []
        """What :meth:`open` applied: the key layout's version, when it wrote it."""
        self._open_lock = asyncio.Lock()
        self._finishes = FinishWaiters()
        self._subscriber = FinishSubscriber(
            self._require, self.keys.finished, self._finishes, poll_s=_FINISH_POLL_S
        )
        self._subscribing: asyncio.Future[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """``redis://[user:password@]host:port/db?prefix=forebay&reconnect_s=10`` or ``rediss://``.

        ``prefix`` (default ``forebay``) starts every key, so several apps can share a database;
        ``reconnect_s`` is how long a call keeps retrying while the server is unreachable.
        Other query options go to redis-py (``ssl_cert_reqs``, ``socket_timeout``, ...).
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in ("prefix", "reconnect_s")}
        rest = [(k, v) for k, v in query if k not in ours]
        kwargs: dict[str, Any] = {}
        if "prefix" in ours:
            kwargs["prefix"] = ours["prefix"]
        if "reconnect_s" in ours:
            try:
                kwargs["reconnect_s"] = float(ours["reconnect_s"])
            except ValueError:
                raise ConfigError("reconnect_s must be a number of seconds") from None
        return cls(urlunsplit(parts._replace(query=urlencode(rest))), **kwargs)

    def __repr__(self) -> str:
        return f"RedisBackend({self._safe_url()!r}, prefix={self.prefix!r})"

    def _safe_url(self) -> str:
        return redacted(self.url)

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        async with self._open_lock:
            if self._client is not None:
                return
            client = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                retry=retry_policy(self.reconnect_s),
                health_check_interval=30,
            )
            try:
                await client.ping()
                await self._warn_if_lossy(client)
                applied = await self._migrate(client)
                pipe = client.pipeline(transaction=False)
                for source in script_sources().values():
                    pipe.script_load(source)
                await pipe.execute()
            except (redis_errors.RedisError, OSError) as exc:
                await client.aclose()
                raise translate(exc, self._safe_url()) from exc
            except BaseException:
                await client.aclose()
                raise
            self._scripts = {
                name: client.register_script(source) for name, source in script_sources().items()
            }
            self._client = client
            self.applied_on_open = applied

    async def close(self) -> None:
        async with self._open_lock:
            if self._client is None:
                return
            await self._enqueuer.drain()
            await self._subscriber.stop()
            self._subscribing = None
            client, self._client = self._client, None
            await client.aclose()

    async def migrate(self) -> list[str]:
        return await self._migrate(self._require())

    async def _migrate(self, client: aioredis.Redis) -> list[str]:
        stored = await client.get(self.keys.schema)
        if stored is None:
            created = await client.set(self.keys.schema, LAYOUT_VERSION, nx=True)
            return [f"redis key layout {LAYOUT_VERSION}"] if created else []
        version = int(stored)
        if version > LAYOUT_VERSION:
            raise ConfigError(
                f"the Redis keys under {self.prefix!r} were written by a newer forebay "
                f"(layout {version}, this one knows {LAYOUT_VERSION}): upgrade forebay"
            )
        applied = []
        if version < 2:
            await self._index_queue_done(client)
            await client.set(self.keys.schema, 2)
            applied.append("redis key layout 2 (finished jobs indexed per queue)")
        if version < 3:
            # Runs and waiting jobs live in keys of their own: nothing to rewrite. A job that
            # names a run stored by no one (a run_id from before runs existed) counts in none.
            await client.set(self.keys.schema, 3)
            applied.append("redis key layout 3 (runs and waiting jobs)")
        if version < 4:
            # Flow control: lanes, buckets and tenant counts are new keys. The jobs stored
            # before carry no flow key and no tenant, so they stay where they wait.
            await client.set(self.keys.schema, 4)
            applied.append("redis key layout 4 (flow control: lanes, rate buckets, tenants)")
        if version < 5:
            # The fleet's keys are new (worker records, finished-job counts, counted from now
            # on); jobs stored before carry no traceparent, which reads as none.
            await client.set(self.keys.schema, 5)
            applied.append("redis key layout 5 (worker records, finished-job counts)")
        return applied

    async def _index_queue_done(self, client: aioredis.Redis) -> None:
        """Layout 1 to 2: index every finished job in its queue's sorted set too, in chunks
        (each one atomic; doing it again, e.g. by two processes at once, changes nothing)."""
        script = client.register_script(script_sources()["index_queue_done"])
        for state in ("completed", "dead", "cancelled"):
            start = 0
            while True:
                n = int(await script(keys=[self.prefix], args=[state, start, _SCRIPT_JOBS]))
                start += n
                if n < _SCRIPT_JOBS:
                    break

    async def ping(self) -> None:
        try:
            await self._require().ping()
        except (redis_errors.RedisError, OSError) as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}") from exc

    def migration_sql(self) -> str:
        """Raise ConfigError: Redis keeps no SQL schema (its key layout is in ``keys.py``)."""
        raise ConfigError("the Redis backend keeps no SQL schema: there is no SQL to print")

    async def drop_everything(self) -> None:
        """Delete every key under this backend's prefix, with every job in it."""
        client = self._require()
        try:
            batch: list[str] = []
            async for key in client.scan_iter(match=self.keys.everything(), count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc

    async def _warn_if_lossy(self, client: aioredis.Redis) -> None:
        """Log a warning when the server is configured so that it can lose jobs."""
        where = self._safe_url()
        config: dict[Any, Any] = {}
        try:
            for name in ("maxmemory-policy", "appendonly", "save"):  # one at a time: Redis 6
                config.update(await client.config_get(name))
        except redis_errors.ResponseError as exc:
            log.warning(
                "could not check whether Redis at %s can lose jobs: CONFIG GET is not allowed "
                "(%s). Make sure it never evicts keys (maxmemory-policy noeviction) and that it "
                "persists to disk (managed services such as Upstash show this in their settings).",
                where,
                exc,
            )
            return
        policy = config.get("maxmemory-policy") or "noeviction"
        if policy != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy %s: when it runs out of memory it may evict "
                "jobs, which are then lost without a trace. Set maxmemory-policy noeviction "
                "(a full server then refuses enqueues with an error instead).",
                where,
                policy,
            )
        if config.get("appendonly") == "no" and not (config.get("save") or "").strip():
            log.warning(
                "Redis at %s has persistence off (appendonly no and no save rules): a restart "
                "of the server loses every job. Set appendonly yes (appendfsync everysec, or "
                "always to lose nothing acknowledged).",
                where,
            )

    # -- plumbing -------------------------------------------------------------------------
    def _require(self) -> aioredis.Redis:
        if self._client is None:
            raise BackendError("the Redis backend is not open; call open() first")
        return self._client

    async def _run(self, script: str, *args: str | bytes | int) -> Any:
        """Run one script (EVALSHA) with the prefix as its only key."""
        self._require()
        try:
            return await self._scripts[script](keys=[self.prefix], args=args)
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc

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
        self._require()
        jobs = list(jobs)
        depth = [
            (queue, cap, incoming)
            for queue, cap in (max_depth or {}).items()
            if (incoming := sum(1 for j in jobs if j.queue == queue))
        ]
        # A call checked against max_depth is stored atomically, in one script; others are
        # cut into slices that each hold the server only briefly.
        # (So is a big call into a queue with a stored max_depth: refused whole or stored.)
        quotas = None
        if tenant_max_depth and any(j.tenant is not None for j in jobs):
            quotas = dict(tenant_max_depth)
        whole = (
            bool(depth)
            or quotas is not None
            or (len(jobs) > _SCRIPT_JOBS and await self._any_stored_cap(jobs))
        )
        step = len(jobs) if whole else _SCRIPT_JOBS
        calls = [_EnqueueCall(jobs[i : i + step], depth, quotas) for i in range(0, len(jobs), step)]
        if len(calls) == 1:
            return await self._enqueuer.submit(calls[0])
        # In order: the first slice is flushed at once, the next ones by the group commit.
        results = await asyncio.gather(*(self._enqueuer.submit(call) for call in calls))
        return [job for part in results for job in part]

    async def _any_stored_cap(self, jobs: Sequence[NewJob]) -> bool:
        """Has one of these jobs' queues a stored max_depth? (A batch cut into several script
        calls would not be refused whole.)"""
        client = self._require()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for queue in {j.queue for j in jobs}:
                    pipe.hexists(self.keys.settings(queue), "max_depth")
                return any(await pipe.execute())
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc

    async def _write_enqueues(self, calls: list[_EnqueueCall]) -> list[list[Job] | BaseException]:
        """One script call for every job of ``calls``; one result per call."""
        now = time.time()
        replies = _answer(await self._run("enqueue", _ts(now), _enqueue_argument(calls)))
        results: list[list[Job] | BaseException] = []
        for call, reply in zip(calls, replies, strict=True):
            if reply[0] != "ok":
                results.append(_refusal(reply))
            else:
                results.append(
                    [
                        _stored(new, item, now)
                        for new, item in zip(call.jobs, reply[1:], strict=True)
                    ]
                )
        return results

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
        """One script; a queue with flow limits (or jobs carrying flow keys) takes its flow
        path, whose jobs come in the order chosen (fair turns, aging), with ``until``."""
        if limit <= 0:
            return Leased()
        if now is None:
            now = time.time()
        token = secrets.token_hex(8)
        reply = _answer(
            await self._run("lease", queue, limit, worker_id, token, _ts(now), _ts(now + lease_s))
        )
        if isinstance(reply, dict):
            until = reply["until"]
            return Leased(
                [job_from_hash(job_id, fields) for job_id, fields in reply["jobs"]],
                None if until is None else float(until),
            )
        jobs = [job_from_hash(job_id, fields) for job_id, fields in reply]
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return Leased(jobs)

    async def extend(self, leases: Sequence[Lease], *, lease_s: float) -> list[int]:
        refused: list[int] = []
        for chunk in _chunks(leases):
            now = time.time()
            rows = _json([[str(lz.job_id), lz.token] for lz in chunk])
            refused += [
                int(i) for i in await self._run("extend", _ts(now), _ts(now + lease_s), rows)
            ]
        return refused

    async def progress(self, lease: Lease, *, pct: float, message: str | None) -> bool:
        args = (_ts(time.time()), lease.job_id, lease.token, _ts(pct), _json(message or False))
        return bool(await self._run("progress", *args))

    async def complete(self, completions: Sequence[Lease | Completion]) -> list[int]:
        rows = (
            [str(c.job_id), c.token]
            if isinstance(c, Lease)
            else [str(c.lease.job_id), c.lease.token, c.result_json or False]
            for c in completions
        )
        return await self._settle("complete", rows)

    async def retry(self, retries: Sequence[RetryJob]) -> list[int]:
        rows = (
            [
                str(r.lease.job_id),
                r.lease.token,
                _ts(r.run_at),
                r.error,
                r.error_type,
                r.traceback or False,
            ]
            for r in retries
        )
        return await self._settle("retry", rows)

    async def dead_letter(self, failures: Sequence[Failure]) -> list[int]:
        rows = (
            [str(f.lease.job_id), f.lease.token, f.error, f.error_type, f.traceback or False]
            for f in failures
        )
        return await self._settle("dead_letter", rows)

    async def defer(self, deferrals: Sequence[Deferral]) -> list[int]:
        rows = ([str(d.lease.job_id), d.lease.token, _ts(d.run_at), d.reason] for d in deferrals)
        return await self._settle("defer", rows)

    async def release(self, leases: Sequence[Lease]) -> list[int]:
        return await self._settle("release", ([str(lz.job_id), lz.token] for lz in leases))

    async def _settle(self, script: str, rows: Iterable[Sequence[str | bool]]) -> list[int]:
        """Run a transition out of running on many jobs; return the ids refused."""
        refused: list[int] = []
        for chunk in _chunks(list(rows)):
            answer = await self._run(script, _ts(time.time()), _json(chunk))
            refused += [int(i) for i in answer]
        return refused

    async def reclaim_expired(self, *, now: float | None = None) -> int:
        at = _ts(time.time() if now is None else now)
        total = 0
        while True:
            found, requeued = await self._run("reclaim", at, 1000)
            total += int(requeued)
            if int(found) < 1000:
                return total

    # -- operator actions -----------------------------------------------------------------
    async def cancel(self, ids: Sequence[int]) -> list[int]:
        cancelled: list[int] = []
        for chunk in _chunks([str(int(i)) for i in ids]):
            answer = await self._run("cancel", _ts(time.time()), _json(chunk))
            cancelled += [int(i) for i in answer]
        return sorted(cancelled)

    async def replay(self, where: JobFilter, *, dry_run: bool = False) -> int:
        ids = await self._dead_matching(where)
        if dry_run:
            return len(ids)
        total = 0
        for chunk in _chunks(ids):
            total += int(await self._run("replay", _ts(time.time()), _json(chunk)))
        return total

    async def purge(self, where: JobFilter, *, dry_run: bool = False) -> int:
        ids = await self._dead_matching(where)
        if dry_run:
            return len(ids)
        total = 0
        for chunk in _chunks(ids):
            total += int(await self._run("purge", _json(chunk)))
        return total

    async def _dead_matching(self, where: JobFilter) -> list[str]:
        if where.state is not None and where.state is not JobState.DEAD:
            return []
        if where.ids is not None:
            candidates = [str(i) for i in sorted(set(where.ids), reverse=True)]
        else:
            candidates = await self._members(self.keys.done("dead"))
        dead = JobFilter(
            queue=where.queue,
            state=JobState.DEAD,
            error_type=where.error_type,
            since=where.since,
            until=where.until,
            run_id=where.run_id,
            tenant=where.tenant,
        )
        return [str(i) for i in await self._filter_candidates(dead, candidates, "ids", None)]

    async def prune(self, spec: PruneSpec) -> int:
        args = (_ts(spec.completed_before), _ts(spec.dead_before), _ts(spec.cancelled_before))
        scope = _json([spec.queue or False, list(spec.other_than)])
        total = 0
        while total < spec.limit:
            ask = min(1000, spec.limit - total)
            n = int(await self._run("prune", *args, ask, scope))
            total += n
            if n < ask:
                break
        if spec.runs_before is not None:
            total += await self._prune_runs(spec.runs_before, spec.limit)
        if spec.throughput_before is not None:
            cut = _ts(spec.throughput_before)
            while int(await self._run("prune_minutes", cut, 1000)) == 1000:
                pass  # a full chunk: more minutes may start before the cut
        await self._run("tidy", _ts(time.time()))
        return total

    async def _prune_runs(self, before: float, limit: int) -> int:
        """Delete completed runs whose completed_at is before ``before``, at most ``limit``;
        return how many (they count in prune's answer, beside the jobs)."""
        deleted = 0
        while deleted < limit:
            ask = min(1000, limit - deleted)
            n = int(await self._run("prune_runs", _ts(before), ask))
            deleted += n
            if n < ask:
                break
        return deleted

    # -- the fleet ------------------------------------------------------------------------
    async def save_worker(self, worker: WorkerInfo) -> None:
        expires_at = _ts(worker.expires_at.timestamp())
        record = _json(worker.to_json())
        before = _ts(time.time() - RECORD_GRACE_S)
        await self._run("save_worker", before, worker.id, expires_at, record)

    async def remove_worker(self, worker_id: str) -> None:
        client = self._require()
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.workers, worker_id)
                pipe.zrem(self.keys.worker_deadlines, worker_id)
                await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc

    async def list_workers(self, *, now: float | None = None) -> list[WorkerInfo]:
        records = await self._run("workers", _ts(time.time() if now is None else now))
        workers = [WorkerInfo.from_json(json.loads(r)) for r in records]
        return sorted(workers, key=lambda w: (w.started_at, w.id))

    async def throughput(self, *, since: float, queue: str | None = None) -> list[Throughput]:
        """Reads the minutes from the one of ``since`` on (P:minutes), then each one's counts
        (every queue's, or ``queue``'s three fields): as many reads as minutes asked for."""
        client = self._require()
        outcomes = ("completed", "dead", "reclaimed")
        try:
            minutes = cast(
                list[str],
                await client.zrangebyscore(self.keys.minutes, minute_of(since), "+inf"),
            )
            if not minutes:
                return []
            pipe = client.pipeline(transaction=False)
            for minute in minutes:
                if queue is None:
                    pipe.hgetall(self.keys.minute(int(minute)))
                else:
                    pipe.hmget(self.keys.minute(int(minute)), [f"{queue} {o}" for o in outcomes])
            answers = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        rows: list[Throughput] = []
        for minute, answer in zip(minutes, answers, strict=True):
            fields = answer if queue is None else _named(queue, outcomes, answer)
            at = datetime.fromtimestamp(int(minute), UTC)
            rows += [Throughput(q, at, **counts) for q, counts in _per_queue(fields).items()]
        return sorted(rows, key=lambda r: (r.queue, r.minute))

    async def totals(self) -> list[QueueTotals]:
        try:
            fields = cast(dict[str, str], await self._require().hgetall(self.keys.totals))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        return [QueueTotals(q, **counts) for q, counts in sorted(_per_queue(fields).items())]

    # -- reading --------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        try:
            fields = cast(dict[str, str], await self._require().hgetall(self.keys.job(job_id)))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        if not fields:
            return None
        return job_from_hash(job_id, fields)

    async def list_jobs(
        self, where: JobFilter, *, limit: int = 100, before_id: int | None = None
    ) -> list[Job]:
        if limit <= 0:
            return []
        indexed = {
            JobState.WAITING: self.keys.waiting_jobs,
            JobState.DEAD: self.keys.done("dead"),
            JobState.CANCELLED: self.keys.done("cancelled"),
            JobState.RUNNING: self.keys.leases,
        }
        if where.ids is not None:
            candidates: list[str] | None = [str(i) for i in set(where.ids)]
        elif where.state in indexed:
            candidates = await self._members(indexed[where.state])
        else:
            candidates = None  # walk every job, newest first
        if candidates is not None:
            ids = sorted((int(c) for c in candidates), reverse=True)
            if before_id is not None:
                ids = [i for i in ids if i < before_id]
            candidates = [str(i) for i in ids]
        found = await self._filter_candidates(where, candidates, "jobs", limit, before_id)
        return [job_from_hash(job_id, fields) for job_id, fields in found]

    async def _filter_candidates(
        self,
        where: JobFilter,
        candidates: list[str] | None,
        output: str,
        limit: int | None,
        before_id: int | None = None,
    ) -> list[Any]:
        """Run ``list.lua`` over candidate ids (or every job when None) until ``limit`` match."""
        flt = _json(_filter_values(where))
        found: list[Any] = []
        want = limit if limit is not None else 1 << 62
        if candidates is not None:
            for chunk in _chunks(candidates):
                args = ("ids", output, want - len(found), "", 0, flt, _json(chunk))
                found += _answer(await self._run("list", *args))[1:]
                if len(found) >= want:
                    break
            return found
        cursor = "+inf" if before_id is None else str(before_id)
        while len(found) < want:
            args = ("scan", output, want - len(found), cursor, 1000, flt, "[]")
            reply = _answer(await self._run("list", *args))
            found += reply[1:]
            if not reply[0]:
                break
            cursor = reply[0]
        return found

    async def _members(self, key: str) -> list[str]:
        try:
            members = cast(list[str], await self._require().zrange(key, 0, -1))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        return members

    async def counts(
        self, *, now: float | None = None, tenant: str | None = None
    ) -> list[QueueCounts]:
        """With ``tenant``: that tenant's counts per state (kept beside the queue's), its
        scheduled jobs and its jobs held back (each found by a bounded scan of the queue's
        waiting sets and lanes); the oldest queued age is not narrowed (None)."""
        at = time.time() if now is None else now
        result = []
        stalled = await self._stalled(at, tenant)
        rows = await self._run("counts", _ts(at), tenant or "")
        for queue, flat, scheduled, oldest, throttled in rows:
            c = {k: int(v) for k, v in zip(flat[0::2], flat[1::2], strict=True)}
            states = {s: c.get(s, 0) for s in _COUNTED}
            if not any(states.values()):
                continue  # every job of this queue was pruned
            result.append(
                QueueCounts(
                    queue=queue,
                    **states,
                    scheduled=int(scheduled),
                    retrying=c.get("retrying", 0),
                    oldest_queued_age_s=None if not oldest else max(0.0, at - float(oldest)),
                    stalled=stalled.get(queue, 0),
                    throttled=max(0, int(throttled)),
                )
            )
        return sorted(result, key=lambda q: q.queue)

    async def _stalled(self, at: float, tenant: str | None = None) -> dict[str, int]:
        """Running jobs per queue whose lease expired before ``at`` (the leases set's scores
        are the deadlines; expired ones are few: workers reclaim them), of ``tenant`` when
        given."""
        client = self._require()
        try:
            ids = cast(
                list[str], await client.zrangebyscore(self.keys.leases, "-inf", f"({_ts(at)}")
            )
            if not ids:
                return {}
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self.keys.job(int(job_id)), "queue", "tenant")
            rows = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        per_queue: dict[str, int] = {}
        for queue, owner in rows:
            if queue is not None and (tenant is None or owner == tenant):
                per_queue[queue] = per_queue.get(queue, 0) + 1
        return per_queue

    async def wait_for_work(self, queues: Sequence[str], *, timeout_s: float) -> None:
        """Return when a job may be due on ``queues``: at once if one is, else when an entry
        arrives on their streams (any process), a scheduled job comes due, or after timeout_s."""
        client = self._require()
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            now = time.time()
            reply = await self._run("poll", _ts(now), *queues)
            if reply[0] == 1:
                return
            block_s = min(remaining, _MAX_BLOCK_S)
            if reply[1]:
                block_s = min(block_s, float(reply[1]) - now)
            if block_s <= 0:
                return
            streams = dict(zip(reply[2::2], reply[3::2], strict=True))
            try:
                # Blocks without claiming anything: the lease script does the claiming.
                news = await client.xread(streams, count=1, block=max(1, math.ceil(block_s * 1000)))
            except (redis_errors.RedisError, OSError) as exc:
                raise translate(exc) from exc
            if news or (reply[1] and float(reply[1]) <= time.time()):
                return

    # -- waiting for a job, and finding one by its key ------------------------------------
    async def wait_for_finish(self, job_id: int, *, timeout_s: float) -> Job | None:
        """Woken by the ids the scripts publish (from any process); re-reads every
        ``_FINISH_POLL_S`` while the subscription is down."""
        self._require()
        return await wait_finished(
            job_id,
            timeout_s=timeout_s,
            waiters=self._finishes,
            read=self.get_job,
            poll_s=self._subscriber.poll_s_now,
            ready=self._subscribe_to_finishes,
        )

    async def _subscribe_to_finishes(self) -> None:
        if self._subscribing is None:
            # The first wait subscribes (at most _SUBSCRIBE_WAIT_S) before its first read, so no
            # job finished after that read goes unheard; later waits poll while it is down.
            self._subscribing = asyncio.ensure_future(self._subscriber.started(_SUBSCRIBE_WAIT_S))
        await asyncio.shield(self._subscribing)

    async def get_job_by_key(self, queue: str, key: str) -> Job | None:
        client = self._require()
        try:
            found = cast(str | None, await client.hget(self.keys.keys(queue), key))
            if found is None:
                return None
            fields = cast(dict[str, str], await client.hgetall(self.keys.job(int(found))))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        # Empty when the job was pruned between the two reads.
        return job_from_hash(found, fields) if fields else None

    # -- schedules --------------------------------------------------------------------------
    async def save_schedules(self, schedules: Sequence[Schedule]) -> None:
        if not schedules:
            return
        definitions = {s.name: _json(schedule_definition(s)) for s in schedules}
        try:
            await self._require().hset(self.keys.schedules, mapping=cast(Any, definitions))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc

    async def list_schedules(self) -> list[Schedule]:
        client = self._require()
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.keys.schedules)
                pipe.hgetall(self.keys.schedule_ticks)
                definitions, ticks = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        rows = []
        for name in sorted(definitions):
            stored = json.loads(definitions[name]) | {"last_tick": ticks.get(name)}
            rows.append(schedule_from_row([stored[c] for c in SCHEDULE_COLUMNS]))
        return rows

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        client = self._require()
        try:
            async with client.pipeline(transaction=True) as pipe:
                for name in wanted:
                    pipe.hdel(self.keys.schedules, name)
                pipe.hdel(self.keys.schedule_ticks, *wanted)
                answers = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        return sorted(name for name, n in zip(wanted, answers, strict=False) if n)

    async def fire_schedule(self, firing: Firing) -> bool:
        jobs = _enqueue_argument([_EnqueueCall(list(firing.jobs), [])]) if firing.jobs else b"[]"
        after = "" if firing.after is None else _ts(firing.after)
        answer = await self._run(
            "fire_schedule", _ts(time.time()), jobs, firing.name, after, _ts(firing.tick)
        )
        return bool(answer != "stale")

    # -- dead letters by time of death -------------------------------------------------------
    async def list_dead(
        self, where: JobFilter, *, limit: int = 100, before: DeadCursor | None = None
    ) -> list[Job]:
        """Walks a dead set (the queue's own when ``where`` names one) from the latest death
        down, a chunk at a time, so a page reads about as many entries as it shows. A set
        orders equal scores by member text, not by id: the jobs of one death time (to the
        microsecond) are gathered whole, then given in id order, before any is shown."""
        if limit <= 0:
            return []
        client = self._require()
        key = (
            self.keys.done("dead")
            if where.queue is None
            else self.keys.queue_done(where.queue, "dead")
        )
        # A little above the cursor's microsecond: the comparison below is the exact one.
        top = "+inf" if before is None else repr((before.micros + 1) / 1_000_000)
        wanted = None if where.ids is None else set(where.ids)
        dead = replace(where, state=JobState.DEAD, ids=None)
        found: list[Any] = []
        group: list[int] = []
        group_us: int | None = None
        offset = 0
        while len(found) < limit:
            try:
                chunk = cast(
                    list[tuple[str, float]],
                    await client.zrevrangebyscore(
                        key, top, "-inf", start=offset, num=_DEAD_CHUNK, withscores=True
                    ),
                )
            except (redis_errors.RedisError, OSError) as exc:
                raise translate(exc) from exc
            offset += len(chunk)
            ready: list[int] = []
            for member, score in chunk:
                us, job_id = _death_micros(score), int(member)
                if before is not None and (us, job_id) >= (before.micros, before.id):
                    continue
                if wanted is not None and job_id not in wanted:
                    continue
                if us != group_us:  # scores only go down: the previous instant is whole
                    ready += sorted(group, reverse=True)
                    group, group_us = [], us
                group.append(job_id)
            last = len(chunk) < _DEAD_CHUNK
            if last:
                ready += sorted(group, reverse=True)
            if ready:
                found += await self._filter_candidates(
                    dead, [str(i) for i in ready], "jobs", limit - len(found)
                )
            if last:
                break
        return [job_from_hash(job_id, fields) for job_id, fields in found[:limit]]

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
        flag = "" if paused is None else ("1" if paused else "0")
        depth = "" if max_depth is KEEP else ("none" if max_depth is None else str(max_depth))
        stored = ""
        if isinstance(limits, FlowLimits):
            stored = _json(limits.to_dict()) if limits.active else "none"
        row = await self._run("set_queue", queue, _ts(time.time()), flag, depth, stored)
        return _settings([queue, *row])

    async def queue_settings(self) -> list[QueueSettings]:
        rows = await self._run("queue_settings")
        return sorted((_settings(r) for r in rows), key=lambda s: s.queue)

    async def run_now(self, ids: Sequence[int]) -> list[int]:
        moved: list[int] = []
        for chunk in _chunks([str(int(i)) for i in ids]):
            answer = await self._run("run_now", _ts(time.time()), _json(chunk))
            moved += [int(i) for i in answer]
        return sorted(moved)

    async def cancel_where(self, where: JobFilter, *, dry_run: bool = False) -> int:
        ids = await self._cancellable(where)
        if dry_run:
            return len(ids)
        return len(await self.cancel(ids))

    async def _cancellable(self, where: JobFilter) -> list[int]:
        unfinished = (JobState.WAITING, JobState.QUEUED, JobState.RUNNING)
        states = [s for s in unfinished if where.state in (None, s)]
        found: set[int] = set()
        for state in states:
            if where.ids is not None:
                candidates: list[str] | None = [str(i) for i in sorted(set(where.ids))]
            elif state is JobState.RUNNING:
                candidates = await self._members(self.keys.leases)
            elif state is JobState.WAITING:
                candidates = await self._members(self.keys.waiting_jobs)
            else:
                candidates = None
            one = replace(where, state=state, ids=None)
            matching = await self._filter_candidates(one, candidates, "ids", None)
            found.update(int(i) for i in matching)
        return sorted(found)

    # -- runs ---------------------------------------------------------------------------
    async def start_run(self, run: NewRun) -> Run:
        values = [
            run.id,
            run.name,
            run.key,
            run.meta_json,
            run.on_complete,
            run.webhook,
            run.tenant,
        ]
        row = _json([False if v is None else v for v in values])
        created, run_id, flat = await self._run("start_run", _ts(time.time()), row)
        return _run_from_hash(run_id, flat, created=bool(created))

    async def seal_run(self, run_id: str) -> Run | None:
        flat = await self._run("seal_run", _ts(time.time()), run_id)
        return None if flat is None else _run_from_hash(run_id, flat)

    async def get_run(self, run_id: str) -> Run | None:
        try:
            fields = cast(dict[str, str], await self._require().hgetall(self.keys.run(run_id)))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc) from exc
        return _run_from_fields(run_id, fields) if fields else None

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        limit: int = 100,
        before_id: str | None = None,
        tenant: str | None = None,
    ) -> list[Run]:
        """Walks the run index down from ``before_id`` (run ids sort as they were started), a
        chunk at a time, reading each run's hash (one snapshot per run)."""
        client = self._require()
        found: list[Run] = []
        top = "+" if before_id is None else f"({before_id}"
        while len(found) < limit:
            try:
                ids = cast(
                    list[str],
                    await client.zrevrangebylex(self.keys.runs, top, "-", start=0, num=_RUN_CHUNK),
                )
                if not ids:
                    break
                pipe = client.pipeline(transaction=False)
                for run_id in ids:
                    pipe.hgetall(self.keys.run(run_id))
                hashes = await pipe.execute()
            except (redis_errors.RedisError, OSError) as exc:
                raise translate(exc) from exc
            for run_id, fields in zip(ids, hashes, strict=True):
                if (
                    fields
                    and (state is None or fields.get("state") == state)
                    and (tenant is None or fields.get("tenant") == tenant)
                ):
                    found.append(_run_from_fields(run_id, fields))
            top = f"({ids[-1]}"
        return found[:limit]


def _enqueue_argument(calls: Sequence[_EnqueueCall]) -> bytes:
    """``enqueue.lua``'s batch argument: per call, its depth checks, its jobs, and whether one
    names a run or parents (the script checks those only then)."""
    batch = [
        [
            call.depth,
            [_enqueue_row(j) for j in call.jobs],
            any(j.run_id is not None or j.after for j in call.jobs),
            call.tenant_quotas or False,
        ]
        for call in calls
    ]
    try:
        return _json(batch).encode("utf-8")
    except UnicodeEncodeError as exc:  # NewJob.create refuses such texts: a bypass
        raise InvalidPayload(f"a job of the batch is not valid Unicode text: {exc}") from None


def _named(queue: str, outcomes: Sequence[str], values: Sequence[str | None]) -> dict[str, str]:
    """An HMGET answer of ``queue``'s outcome fields as a hash would give them."""
    return {f"{queue} {o}": v for o, v in zip(outcomes, values, strict=True) if v is not None}


def _per_queue(fields: dict[str, str]) -> dict[str, dict[str, int]]:
    """Counts stored as ``"<queue> <outcome>" -> n`` (P:minute:M, P:totals), per queue."""
    counts: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        queue, outcome = name.rsplit(" ", 1)
        counts.setdefault(queue, {})[outcome] = int(value)
    return counts


def _settings(row: Sequence[Any]) -> QueueSettings:
    queue, paused, depth, updated, *rest = row
    limits = rest[0] if rest else None
    return QueueSettings(
        queue=queue,
        paused=bool(int(paused)),
        max_depth=None if not depth else int(depth),
        updated_at=datetime.fromtimestamp(float(updated), UTC),
        limits=FlowLimits.from_dict(json.loads(limits) if limits else None),
    )


def _stored(new: NewJob, item: Any, now: float) -> Job:
    """One enqueue result: a new queued job's id, a new job stored waiting or cancelled (with
    its fields), or the existing job of its (queue, key)."""
    if isinstance(item, str):
        return new.stored_as(int(item), datetime.fromtimestamp(now, UTC))
    return job_from_hash(item[0], item[1], created=len(item) > 2)


def _refusal(reply: Sequence[Any]) -> EnqueueError:
    """``enqueue.lua``'s answer refusing one call, as the error its caller gets."""
    kind = reply[0]
    if kind == "full":
        return QueueFull(reply[1], int(reply[2]))
    if kind == "tenant_full":
        return TenantQuotaFull(reply[1], int(reply[2]))
    if kind == "unknown_run":
        return UnknownRun(reply[1])
    if kind == "sealed":
        return RunSealed(reply[1], reply[2])
    return UnknownParent(sorted(int(i) for i in reply[1]))


def _run_from_hash(run_id: str, flat: Sequence[str], created: bool = True) -> Run:
    """A run from its hash, as HGETALL (or a script) gives it: field, value, ..."""
    fields = dict(zip(flat[0::2], flat[1::2], strict=True))
    return _run_from_fields(run_id, fields, created)


def _run_from_fields(run_id: str, fields: dict[str, str], created: bool = True) -> Run:
    def counted(name: str) -> int:
        return int(fields.get(name) or 0)

    def at(name: str) -> float | None:
        value = fields.get(name)
        return None if value is None else float(value)

    created_at = at("created_at")
    assert created_at is not None
    return run_from_values(
        id=run_id,
        name=fields.get("name"),
        key=fields.get("key"),
        meta=fields.get("meta"),
        state=fields["state"],
        on_complete=fields.get("on_complete"),
        webhook=fields.get("webhook"),
        total=counted("total"),
        waiting=counted("waiting"),
        queued=counted("queued"),
        running=counted("running"),
        completed=counted("completed"),
        dead=counted("dead"),
        cancelled=counted("cancelled"),
        created_at=created_at,
        sealed_at=at("sealed_at"),
        completed_at=at("completed_at"),
        created=created,
        tenant=fields.get("tenant"),
    )


def _filter_values(where: JobFilter) -> list[str | bool]:
    """``list.lua``'s filter: queue, state, error_type, since, until, run_id, tenant (False:
    any)."""
    since = None if where.since is None else _ts(where.since.timestamp())
    until = None if where.until is None else _ts(where.until.timestamp())
    values = (
        where.queue,
        None if where.state is None else str(where.state),
        where.error_type,
        since,
        until,
        where.run_id,
        where.tenant,
    )
    return [False if v is None else v for v in values]


def _death_micros(score: float) -> int:
    """A dead set's score (the time of death) in whole microseconds, as a Job holds it."""
    return DeadCursor(datetime.fromtimestamp(score, UTC), 0).micros


def _chunks(items: Sequence[Any], size: int = 1000) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
