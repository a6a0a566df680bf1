"""Every Redis key the redis backend uses, in one place.

Key layout (``P`` is the prefix, ``forebay`` unless the URL says ``?prefix=``; ``Q`` a queue
name, ``N`` a job id, ``R`` a priority)::

    P:schema                   string  version of this layout (``migrate`` writes it)
    P:next_id                  string  INCR counter: job ids, never reused
    P:queues                   set     names of every queue that ever held a job
    P:job:N                    hash    one job: queue payload state key priority attempt
                                       deliveries defers run_at created_at updated_at
                                       finished_at lease_token lease_expires_at worker_id
                                       progress progress_message error error_type run_id
                                       started_at, result (JSON text) and errors (JSON
                                       text: the last 10 attempts' errors),
                                       max_attempts, timeout_s (the job's own limits, absent
                                       when not given), ``entry``: its stream entry id
                                       while it has one; its links: after_ids (JSON text),
                                       after_policy, webhook, parent_id, ``parents_left``
                                       (while waiting: parents not yet finished) and
                                       ``children`` ("1" while P:children:N holds ids);
                                       ``traceparent``: the W3C trace context of its enqueue
                                       (absent when none was given)
    P:jobs                     zset    every stored job, score = id (listings, newest first)
    P:leases                   zset    running jobs, score = lease_expires_at (reclaiming)
    P:done:completed           zset    finished jobs per terminal state, score = finished_at
    P:done:dead                        (dead-letter listings, replay, purge)
    P:done:cancelled
    P:q:Q:counts               hash    jobs of Q per state (waiting queued running completed
                                       dead cancelled) and ``retrying``, kept by every script
    P:q:Q:keys                 hash    idempotency key -> job id, until that job is deleted
    P:q:Q:levels               zset    priority levels of Q in use, score = R
    P:q:Q:stream:R             stream  jobs of Q at priority R that were due when enqueued, in
                                       (run_at, id) order, one entry ``id N at run_at`` each (a
                                       job due earlier than the last entry goes to the waiting
                                       set); consumer group ``workers``, consumer ``leased``:
                                       the pending entries are those of running jobs
    P:q:Q:waiting:R            zset    every other queued job of Q at priority R: scheduled,
                                       in retry backoff, deferred, put back (released, lease
                                       expired) or enqueued with a past run_at; score = run_at,
                                       member = id zero-padded to 15 digits (ties by id)
    P:q:Q:done:completed       zset    finished jobs of Q per terminal state, score =
    P:q:Q:done:dead                    finished_at (pruning Q by its own retention); may hold
    P:q:Q:done:cancelled               ids of jobs since replayed or purged, dropped by prune
    P:q:Q:wake                 stream  MAXLEN 1; touched when idle workers must poll again: a
                                       due job entered a waiting set (not from the reclaimer),
                                       a scheduled one became the earliest of its level, a
                                       stream was created
    P:schedules                hash    schedule name -> its definition, a JSON object (queue,
                                       cron, every_s, timezone, payload, priority, catch_up)
    P:schedule_ticks           hash    schedule name -> its last tick (epoch seconds), moved
                                       forward only by ``fire_schedule.lua``, in the script
                                       that enqueues the tick's jobs
    P:finished                 channel pub/sub, not a key: every script that finishes jobs
                                       (complete, dead_letter, cancel; and enqueue, a
                                       parent's finish: jobs cancelled for their parents)
                                       publishes their ids,
                                       comma-separated, once per call; processes waiting for
                                       a job to finish subscribe
    P:waiting_jobs             zset    jobs in state waiting (for their parents), score = id
    P:children:N               set     ids of the jobs enqueued to wait for job N while it
                                       was unfinished; read and deleted when N finishes (a
                                       replayed N finishes again without them), or with N
    P:run:I                    hash    run I: name key meta on_complete webhook state
                                       created_at sealed_at completed_at and its counts
                                       (total waiting queued running completed dead
                                       cancelled), kept by every script that moves its jobs
    P:runs                     zset    every run id, score 0 (lexical order = start order:
                                       run ids are UUIDv7 hex), listings newest first
    P:runs:completed           zset    completed runs, score = completed_at (pruning)
    P:run_keys                 hash    run key -> run id, until that run is pruned
    P:configured               set     names of the queues that have stored settings
    P:q:Q:settings             hash    Q's stored settings (operator controls): ``paused``
                                       ("1" while paused; the lease and poll scripts read it),
                                       ``max_depth`` (the enqueue script reads it), ``limits``
                                       (the flow limits, FlowLimits.to_dict() as JSON; the
                                       lease, poll and counts scripts read it) and
                                       ``updated_at``; absent fields are the defaults
    P:q:Q:lane:L               zset    queued jobs of Q that carry a flow key (rate_key,
                                       concurrency_key or fair_key), one set per lane L =
                                       priority, fair_key, rate_key, concurrency_key joined by
                                       NUL (a missing key is empty); score = run_at, member as
                                       in the waiting sets. Such jobs never enter a stream
    P:q:Q:lanes                set     the lanes of Q that hold jobs
    P:q:Q:heads:R              zset    the lanes of Q at priority R that hold jobs: member =
                                       the lane's first job (zero-padded id, as in the
                                       waiting sets) followed by the lane, score = its run_at;
                                       the lease walks them in (run_at, id) order and reads
                                       only the lanes it needs
    P:q:Q:buckets              hash    Q's rate buckets (GCRA tat, epoch seconds): field ''
                                       the queue's, else a rate key's; a tat in the past is
                                       the same as none (pruning deletes it)
    P:q:Q:served               hash    fair key ('' for none) -> when fair leasing last served it
    P:q:Q:running_keys         hash    concurrency key -> running jobs of Q with that key
                                       (every way out of running takes one off)
    P:tenant:T                 hash    tenant T's jobs per queue and state: field
                                       "<queue> <state>" (and "<queue> retrying"), kept where
                                       the queue's counts are (tenant quotas, counts(tenant=))
    P:workers                  hash    worker id -> its record, WorkerInfo.to_json() as JSON
                                       text (saved by every heartbeat, deleted at a clean stop)
    P:worker_deadlines         zset    worker id, score = when its record stops holding
                                       (last_seen + ttl_s); listings read the ids scored from
                                       now on, and every save deletes the records (and ids)
                                       already past theirs
    P:minute:M                 hash    jobs finished in the minute that starts at M (epoch
                                       seconds, a multiple of 60): field "<queue> <outcome>"
                                       (outcome completed, dead or reclaimed) -> how many,
                                       counted by the script that finished them
    P:minutes                  zset    every M that has a P:minute:M, score = member = M:
                                       a throughput read takes the minutes from its start on,
                                       pruning deletes the ones before its cut-off
    P:totals                   hash    "<queue> <outcome>" -> jobs finished since the store
                                       was created (or upgraded to layout 5), counted with
                                       P:minute:M and never pruned

Queue names only hold letters, digits and ``-_.:``, and every per-queue key ends in a fixed
word (or ``stream:<integer>``, ``waiting:<integer>``, ``heads:<integer>``, ``lane:<integer>``
NUL ...: no queue name holds a NUL), so two queues never share a key.

The Lua scripts build the same names through functions generated from :data:`TEMPLATES` by
:func:`lua_prelude` (``key_job(id)``, ``key_stream(queue, priority)``, ...), with the prefix
passed as ``KEYS[1]``: a name is spelled here and nowhere else.
"""

from __future__ import annotations

from string import Formatter

__all__ = [
    "GROUP",
    "LAYOUT_VERSION",
    "LEASED",
    "TEMPLATES",
    "Keys",
    "lua_prelude",
]

LAYOUT_VERSION = 5
"""Bumped when the layout changes incompatibly; ``open`` refuses a newer one and upgrades an
older one (2: finished jobs are indexed per queue as well, ``P:q:Q:done:S``; 3: runs and
waiting jobs, which an older forebay would neither count nor release; 4: flow control, jobs
with flow keys in lanes an older forebay would never lease; 5: the fleet, worker records and
finished-job counts that an older forebay would not keep, and a job's ``traceparent``)."""

GROUP = "workers"
"""The consumer group of every stream."""
LEASED = "leased"
"""The consumer that reads entries: its pending entries are those of running jobs."""

TEMPLATES: dict[str, str] = {
    "schema": "{prefix}:schema",
    "next_id": "{prefix}:next_id",
    "queues": "{prefix}:queues",
    "job": "{prefix}:job:{id}",
    "jobs": "{prefix}:jobs",
    "leases": "{prefix}:leases",
    "done": "{prefix}:done:{state}",
    "counts": "{prefix}:q:{queue}:counts",
    "keys": "{prefix}:q:{queue}:keys",
    "levels": "{prefix}:q:{queue}:levels",
    "stream": "{prefix}:q:{queue}:stream:{priority}",
    "waiting": "{prefix}:q:{queue}:waiting:{priority}",
    "wake": "{prefix}:q:{queue}:wake",
    "schedules": "{prefix}:schedules",
    "schedule_ticks": "{prefix}:schedule_ticks",
    "finished": "{prefix}:finished",
    "queue_done": "{prefix}:q:{queue}:done:{state}",
    "configured": "{prefix}:configured",
    "settings": "{prefix}:q:{queue}:settings",
    "waiting_jobs": "{prefix}:waiting_jobs",
    "children": "{prefix}:children:{id}",
    "run": "{prefix}:run:{id}",
    "runs": "{prefix}:runs",
    "runs_completed": "{prefix}:runs:completed",
    "run_keys": "{prefix}:run_keys",
    "lane": "{prefix}:q:{queue}:lane:{id}",
    "lanes": "{prefix}:q:{queue}:lanes",
    "heads": "{prefix}:q:{queue}:heads:{priority}",
    "buckets": "{prefix}:q:{queue}:buckets",
    "served": "{prefix}:q:{queue}:served",
    "running_keys": "{prefix}:q:{queue}:running_keys",
    "tenant": "{prefix}:tenant:{id}",
    "workers": "{prefix}:workers",
    "worker_deadlines": "{prefix}:worker_deadlines",
    "minute": "{prefix}:minute:{id}",
    "minutes": "{prefix}:minutes",
    "totals": "{prefix}:totals",
}


class Keys:
    """Key names under one prefix, for the Python side."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _name(self, template: str, **parts: object) -> str:
        return TEMPLATES[template].format(prefix=self.prefix, **parts)

    @property
    def schema(self) -> str:
        return self._name("schema")

    @property
    def queues(self) -> str:
        return self._name("queues")

    @property
    def jobs(self) -> str:
        return self._name("jobs")

    @property
    def leases(self) -> str:
        return self._name("leases")

    def job(self, job_id: int) -> str:
        return self._name("job", id=job_id)

    def done(self, state: str) -> str:
        return self._name("done", state=state)

    def stream(self, queue: str, priority: int | str) -> str:
        return self._name("stream", queue=queue, priority=priority)

    def waiting(self, queue: str, priority: int | str) -> str:
        return self._name("waiting", queue=queue, priority=priority)

    def keys(self, queue: str) -> str:
        """The hash of ``queue``'s idempotency keys (key -> job id)."""
        return self._name("keys", queue=queue)

    def levels(self, queue: str) -> str:
        return self._name("levels", queue=queue)

    def queue_done(self, queue: str, state: str) -> str:
        return self._name("queue_done", queue=queue, state=state)

    def wake(self, queue: str) -> str:
        return self._name("wake", queue=queue)

    @property
    def schedules(self) -> str:
        return self._name("schedules")

    @property
    def schedule_ticks(self) -> str:
        return self._name("schedule_ticks")

    @property
    def finished(self) -> str:
        """The pub/sub channel of finished jobs' ids."""
        return self._name("finished")

    @property
    def configured(self) -> str:
        return self._name("configured")

    def settings(self, queue: str) -> str:
        return self._name("settings", queue=queue)

    @property
    def waiting_jobs(self) -> str:
        return self._name("waiting_jobs")

    def lanes(self, queue: str) -> str:
        return self._name("lanes", queue=queue)

    def lane(self, queue: str, lane: str) -> str:
        return self._name("lane", queue=queue, id=lane)

    def heads(self, queue: str, priority: int | str) -> str:
        return self._name("heads", queue=queue, priority=priority)

    def running_keys(self, queue: str) -> str:
        return self._name("running_keys", queue=queue)

    def tenant(self, tenant: str) -> str:
        """Tenant ``tenant``'s counts, per queue and state."""
        return self._name("tenant", id=tenant)

    def run(self, run_id: str) -> str:
        return self._name("run", id=run_id)

    @property
    def runs(self) -> str:
        return self._name("runs")

    @property
    def workers(self) -> str:
        """Worker id -> its record (JSON text)."""
        return self._name("workers")

    @property
    def worker_deadlines(self) -> str:
        return self._name("worker_deadlines")

    def minute(self, minute: int) -> str:
        """The finished-job counts of the minute that starts at ``minute`` (epoch seconds)."""
        return self._name("minute", id=minute)

    @property
    def minutes(self) -> str:
        return self._name("minutes")

    @property
    def totals(self) -> str:
        return self._name("totals")

    def everything(self) -> str:
        """A SCAN MATCH pattern for every key under this prefix (glob characters escaped)."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + ":*"


def _lua_function(name: str, template: str) -> str:
    pieces: list[str] = []
    params: list[str] = []
    for literal, field, _spec, _conv in Formatter().parse(template):
        if literal:
            assert "'" not in literal and "\\" not in literal
            pieces.append(f"'{literal}'")
        if field is None:
            continue
        if field == "prefix":
            pieces.append("PREFIX")
        else:
            params.append(field)
            pieces.append(field)
    return f"local function key_{name}({', '.join(params)}) return {' .. '.join(pieces)} end"


def lua_prelude() -> str:
    """Lua source that every script starts with: the prefix, group names and key builders."""
    lines = [
        "-- generated from forebay/backends/redis/keys.py: key names live there",
        "local PREFIX = KEYS[1]",
        f"local GROUP, LEASED = '{GROUP}', '{LEASED}'",
    ]
    lines += [_lua_function(name, template) for name, template in TEMPLATES.items()]
    return "\n".join(lines) + "\n"
