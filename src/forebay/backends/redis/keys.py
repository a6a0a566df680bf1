"""Every Redis key the redis backend uses, in one place.

Key layout (``P`` is the prefix, ``forebay`` unless the URL says ``?prefix=``; ``Q`` a queue
name, ``N`` a job id, ``R`` a priority)::

    P:schema                   string  version of this layout (``migrate`` writes it)
    P:next_id                  string  INCR counter: job ids, never reused
    P:queues                   set     names of every queue that ever held a job
    P:job:N                    hash    one job: queue payload state key priority attempt
                                       deliveries defers run_at created_at updated_at
                                       finished_at lease_token lease_expires_at worker_id
                                       progress progress_message error error_type run_id,
                                       and ``entry``: its stream entry id while it has one
    P:jobs                     zset    every stored job, score = id (listings, newest first)
    P:leases                   zset    running jobs, score = lease_expires_at (reclaiming)
    P:done:completed           zset    finished jobs per terminal state, score = finished_at
    P:done:dead                        (pruning, dead-letter listings, replay, purge)
    P:done:cancelled
    P:q:Q:counts               hash    jobs of Q per state (queued running completed dead
                                       cancelled) and ``retrying``, kept by every script
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
    P:q:Q:wake                 stream  MAXLEN 1; touched when idle workers must poll again: a
                                       due job entered a waiting set (not from the reclaimer),
                                       a scheduled one became the earliest of its level, a
                                       stream was created
    P:configured               set     names of the queues that have stored settings
    P:q:Q:settings             hash    Q's stored settings (operator controls): ``paused``
                                       ("1" while paused; the lease and poll scripts read it),
                                       ``max_depth`` (the enqueue script reads it), and
                                       ``updated_at``; absent fields are the defaults

Queue names only hold letters, digits and ``-_.:``, and every per-queue key ends in a fixed
word (or ``stream:<integer>``, ``waiting:<integer>``), so two queues never share a key.

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

LAYOUT_VERSION = 1
"""Bumped when the layout changes incompatibly; ``open`` refuses a newer one."""

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
    "configured": "{prefix}:configured",
    "settings": "{prefix}:q:{queue}:settings",
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

    def levels(self, queue: str) -> str:
        return self._name("levels", queue=queue)

    def wake(self, queue: str) -> str:
        return self._name("wake", queue=queue)

    @property
    def configured(self) -> str:
        return self._name("configured")

    def settings(self, queue: str) -> str:
        return self._name("settings", queue=queue)

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
