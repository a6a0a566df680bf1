"""Runs: groups of jobs whose completion is counted, and announced, exactly once (DESIGN §10).

A run is started open (:meth:`forebay.Forebay.start_run`); jobs join it at enqueue
(``run=run.id``), and a job's handler adds jobs to its own run (``await job.enqueue(...)``
inherits it), so its total is open-ended. Sealing it says no more jobs come from outside: a
sealed run refuses outside jobs (:class:`~forebay.errors.RunSealed`), while the jobs its running
jobs enqueue still join. A run is **complete** once it is sealed and every one of its jobs is
finished (completed, dead or cancelled): then ``completed + dead + cancelled == total``.

The store keeps the counts in the same transaction (or script) as every enqueue and settle,
and the one that completes the run — the settle of its last job, or the seal of a run whose
jobs all finished — also creates, in that same transaction, its **completion jobs**:

* on the run's ``on_complete`` queue, a job whose payload is :func:`run_summary` (key
  ``run:<id>:complete``);
* with a ``webhook`` URL, a delivery job on :data:`WEBHOOK_QUEUE` (key ``run:<id>:webhook``),
  whose payload is :func:`webhook_payload` of type ``run.completed``.

So a completion exists exactly once whatever crashes: a crash before the commit leaves the
last job unfinished (it runs again and completes the run then), a crash after it leaves the
completion jobs stored.

The payloads the stores build are spelled here once (:func:`run_summary`,
:func:`job_summary`, :func:`webhook_payload`); the Redis scripts build the same fields. Times in
them are epoch seconds (floats), as at the backend seam.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from forebay import jsonio
from forebay.errors import InvalidPayload
from forebay.flow import check_tenant
from forebay.job import (
    JSON,
    check_storable,
    check_webhook_url,
    dump_payload,
    to_datetime,
    validate_queue_name,
)

__all__ = [
    "JOB_WEBHOOK_TYPES",
    "RUN_COMPLETED",
    "WEBHOOK_QUEUE",
    "NewRun",
    "Run",
    "RunState",
    "check_webhook_url",
    "job_summary",
    "new_run_id",
    "run_summary",
    "webhook_payload",
]

WEBHOOK_QUEUE: Final = "forebay.webhooks"
"""The queue of webhook deliveries: a job each, retried, dead-lettered and replayed as any job."""

RUN_COMPLETED: Final = "run.completed"
"""The webhook type of a run's completion."""

JOB_WEBHOOK_TYPES: Final = {
    "completed": "job.completed",
    "dead": "job.dead",
    "cancelled": "job.cancelled",
}
"""The webhook type of a job's final state."""

DEPENDENCY_FAILED: Final = "DependencyFailed"
"""The ``error_type`` of a waiting job cancelled because a parent ended dead or cancelled; its
``error`` reads ``parent job <id> ended <state>``."""


class RunState(enum.StrEnum):
    """``open`` (jobs may join), ``sealed`` (only its own jobs' children join),
    ``completed`` (sealed and every job finished; final)."""

    OPEN = "open"
    SEALED = "sealed"
    COMPLETED = "completed"


def new_run_id() -> str:
    """A new run id: 32 hex digits, a UUIDv7 (time-ordered, so ids sort as runs were started
    to the millisecond), which :meth:`Backend.list_runs` pages by. Within one process the ids
    strictly increase, also for runs started in the same millisecond (RFC 9562 §6.2: the
    random bits then count up from the previous id)."""
    global _last_run_id
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 4 & ((1 << 76) - 1))
    # variant bits 10xx in the top of the last 64 bits
    value = value & ~(0x3 << 62) | (0x2 << 62)
    with _run_id_lock:  # ids may be made from several threads (sync helpers, handlers)
        if value <= _last_run_id:
            value = _last_run_id + 1  # same millisecond (or a clock stepped back)
        _last_run_id = value
    return f"{value:032x}"


_last_run_id = 0
_run_id_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to start. Build it with :meth:`create`, which validates every field."""

    id: str
    name: str | None = None
    key: str | None = None
    meta_json: str = "{}"
    on_complete: str | None = None
    """The queue that gets the completion job (None: none)."""
    webhook: str | None = None
    """The URL that gets the ``run.completed`` webhook (None: none)."""
    tenant: str | None = None
    """Whose run this is (a token bound to another tenant does not see it)."""

    @classmethod
    def create(
        cls,
        *,
        name: str | None = None,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        on_complete: str | None = None,
        webhook: str | None = None,
        tenant: str | None = None,
    ) -> NewRun:
        tenant = check_tenant(tenant)
        if name is not None:
            if not isinstance(name, str) or not name or len(name) > 256:
                raise InvalidPayload(
                    "run name must be a non-empty string of at most 256 characters"
                )
            check_storable("run name", name)
        if key is not None:
            if not isinstance(key, str) or not key or len(key) > 512:
                raise InvalidPayload("run key must be a non-empty string of 1-512 characters")
            check_storable("run key", key)
        if meta is not None and not isinstance(meta, Mapping):
            raise InvalidPayload("run meta must be a JSON object (a dict)")
        meta_json = dump_payload(dict(meta or {}))
        if len(meta_json) > 65536:
            raise InvalidPayload("run meta must be at most 64 KiB as JSON")
        if on_complete is not None:
            validate_queue_name(on_complete)
        if webhook is not None:
            check_webhook_url(webhook)
        return cls(new_run_id(), name, key, meta_json, on_complete, webhook, tenant)


@dataclass(frozen=True, slots=True)
class Run:
    """A run as stored, with its counts as of the read (a consistent snapshot).

    ``queued`` counts the jobs not yet running: due, scheduled, backing off before a retry;
    ``waiting`` those waiting for parents (``after=[...]``). ``total`` is every job that ever
    joined; ``queued + waiting + running + completed + dead + cancelled == total``.
    """

    id: str
    name: str | None
    key: str | None
    meta: JSON
    state: RunState
    on_complete: str | None
    webhook: str | None
    total: int
    waiting: int
    queued: int
    running: int
    completed: int
    dead: int
    cancelled: int
    created_at: datetime
    sealed_at: datetime | None = None
    completed_at: datetime | None = None
    created: bool = True
    """False when :meth:`Backend.start_run` found a run with the same key."""
    tenant: str | None = None
    """Whose run this is."""

    @property
    def finished(self) -> int:
        """Jobs finished, however they ended."""
        return self.completed + self.dead + self.cancelled

    @property
    def unfinished(self) -> int:
        return self.total - self.finished

    def to_dict(self) -> dict[str, JSON]:
        """A JSON-ready view (datetimes as ISO 8601)."""

        def iso(d: datetime | None) -> str | None:
            return None if d is None else d.isoformat()

        return {
            "id": self.id,
            "name": self.name,
            "key": self.key,
            "meta": self.meta,
            "state": str(self.state),
            "on_complete": self.on_complete,
            "webhook": self.webhook,
            "total": self.total,
            "waiting": self.waiting,
            "queued": self.queued,
            "running": self.running,
            "completed": self.completed,
            "dead": self.dead,
            "cancelled": self.cancelled,
            "created_at": iso(self.created_at),
            "sealed_at": iso(self.sealed_at),
            "completed_at": iso(self.completed_at),
            "tenant": self.tenant,
        }


def run_from_values(
    *,
    id: str,
    name: str | None,
    key: str | None,
    meta: str | None,
    state: str,
    on_complete: str | None,
    webhook: str | None,
    total: int,
    waiting: int,
    queued: int,
    running: int,
    completed: int,
    dead: int,
    cancelled: int,
    created_at: float,
    sealed_at: float | None,
    completed_at: float | None,
    created: bool = True,
    tenant: str | None = None,
) -> Run:
    """A :class:`Run` from stored values (times in epoch seconds, meta as JSON text)."""
    made = to_datetime(created_at)
    assert made is not None
    return Run(
        id=id,
        name=name,
        key=key,
        meta=jsonio.loads(meta) if meta else {},
        state=RunState(state),
        on_complete=on_complete,
        webhook=webhook,
        total=int(total),
        waiting=int(waiting),
        queued=int(queued),
        running=int(running),
        completed=int(completed),
        dead=int(dead),
        cancelled=int(cancelled),
        created_at=made,
        sealed_at=to_datetime(sealed_at),
        completed_at=to_datetime(completed_at),
        created=created,
        tenant=tenant,
    )


def run_summary(
    *,
    run_id: str,
    name: str | None,
    key: str | None,
    meta: JSON,
    total: int,
    completed: int,
    dead: int,
    cancelled: int,
    created_at: float,
    sealed_at: float,
    completed_at: float,
) -> dict[str, JSON]:
    """The payload of a run's ``on_complete`` job, and the ``data`` of its webhook."""
    return {
        "run_id": run_id,
        "name": name,
        "key": key,
        "meta": meta,
        "total": total,
        "completed": completed,
        "dead": dead,
        "cancelled": cancelled,
        "created_at": created_at,
        "sealed_at": sealed_at,
        "completed_at": completed_at,
    }


def job_summary(
    *,
    job_id: int,
    queue: str,
    state: str,
    key: str | None,
    run_id: str | None,
    attempt: int,
    error: str | None,
    error_type: str | None,
    result: JSON,
    finished_at: float,
) -> dict[str, JSON]:
    """The ``data`` of a job's webhook: its final state."""
    return {
        "id": job_id,
        "queue": queue,
        "state": state,
        "key": key,
        "run_id": run_id,
        "attempt": attempt,
        "error": error,
        "error_type": error_type,
        "result": result,
        "finished_at": finished_at,
    }


def webhook_payload(url: str, type_: str, data: dict[str, JSON]) -> dict[str, JSON]:
    """The payload of a delivery job on :data:`WEBHOOK_QUEUE`: where, what, and the body's
    ``data``. The delivery handler sends ``{"type": type, "timestamp": ..., "data": data}``."""
    return {"url": url, "type": type_, "data": data}
