"""The fleet, as the job store sees it: the worker processes that registered in it, and how many
jobs every queue finished per minute.

Every worker process registers a :class:`WorkerInfo` in the store when it starts, saves it again
on every heartbeat (its counts, the jobs it runs now) and removes it when it stops cleanly. A
record says how long it holds (``ttl_s`` from its last save): a process killed without a goodbye
drops out of every listing once that time has passed, on every backend. So any node — an
intake-only ``forebay serve --no-workers``, the CLI on a laptop — lists the live workers of the
whole fleet and tells, per queue, whether anything consumes it.

:class:`Throughput` is what the store counts as jobs finish, in the same transaction or script as
the finish itself: per queue and minute, the jobs that completed, that were dead-lettered and
whose lease was reclaimed (their worker died). Minutes are kept for a day
(:data:`THROUGHPUT_KEPT_S`); the totals since the store was created (:class:`QueueTotals`) are
kept for ever, so Prometheus counters read from the store never go back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from forebay.errors import BackendError
from forebay.job import JSON

__all__ = [
    "RECORD_GRACE_S",
    "THROUGHPUT_KEPT_S",
    "QueueConsumers",
    "QueueTotals",
    "Throughput",
    "WorkerInfo",
    "minute_of",
    "queue_consumers",
]

THROUGHPUT_KEPT_S: Final = 24 * 3600.0
"""How long the per-minute counts are kept (the totals are kept for ever)."""

RECORD_GRACE_S: Final = 60.0
"""How long past its expiry a worker's record is kept before another worker's save deletes it.
Listings leave an expired record out at once; the grace only keeps a saver whose clock runs
ahead of the others' from deleting records that still hold by their writers' clocks."""


def minute_of(epoch_s: float) -> int:
    """The start of the minute ``epoch_s`` falls in, in epoch seconds (the stores' bucket)."""
    return int(epoch_s // 60) * 60


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker process, as it registered in the store."""

    id: str
    """The worker's id (``host:pid:random`` unless set with ``worker_id``)."""
    host: str
    pid: int
    queues: tuple[str, ...]
    """The queues it leases from."""
    concurrency: int
    """Jobs it runs at once, over all its queues."""
    version: str
    """The forebay version it runs."""
    started_at: datetime
    last_seen: datetime
    """Its last heartbeat (when it saved this record)."""
    ttl_s: float
    """The record holds until ``last_seen + ttl_s``; then the worker is taken for gone."""
    completed: int = 0
    """Jobs it completed since it started."""
    failed: int = 0
    """Runs of its that failed (retried or dead-lettered) since it started."""
    running: int = 0
    """Jobs it runs now."""
    stopping: bool = False
    """It is shutting down (finishing its running jobs, leasing no more)."""

    @property
    def expires_at(self) -> datetime:
        """When the record stops holding unless the worker saves it again."""
        return datetime.fromtimestamp(self.last_seen.timestamp() + self.ttl_s, UTC)

    def consumes(self, queue: str) -> bool:
        return queue in self.queues

    def to_dict(self) -> dict[str, JSON]:
        """What HTTP and ``--json`` show: the stored fields, times in ISO 8601, and when the
        record stops holding (``expires_at``) instead of its ttl."""
        out = self.to_json()
        del out["ttl_s"]
        out["started_at"] = _iso(self.started_at)
        out["last_seen"] = _iso(self.last_seen)
        out["expires_at"] = _iso(self.expires_at)
        return out

    def to_json(self) -> dict[str, JSON]:
        """What a backend stores (epoch seconds; read back by :meth:`from_json`)."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "version": self.version,
            "started_at": self.started_at.timestamp(),
            "last_seen": self.last_seen.timestamp(),
            "ttl_s": self.ttl_s,
            "completed": self.completed,
            "failed": self.failed,
            "running": self.running,
            "stopping": self.stopping,
        }

    @classmethod
    def from_json(cls, data: dict[str, JSON]) -> WorkerInfo:
        """The record a backend stored; BackendError when it is not one (written by a newer
        or broken version)."""
        try:
            queues = data["queues"]
            if not isinstance(queues, list):
                raise TypeError("queues is not a list")
            return cls(
                id=str(data["id"]),
                host=str(data["host"]),
                pid=_whole(data, "pid"),
                queues=tuple(str(q) for q in queues),
                concurrency=_whole(data, "concurrency"),
                version=str(data["version"]),
                started_at=datetime.fromtimestamp(_number(data, "started_at"), UTC),
                last_seen=datetime.fromtimestamp(_number(data, "last_seen"), UTC),
                ttl_s=_number(data, "ttl_s"),
                completed=_whole(data, "completed"),
                failed=_whole(data, "failed"),
                running=_whole(data, "running"),
                stopping=bool(data.get("stopping", False)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise BackendError(
                f"a stored worker record is not one this version reads: {exc}"
            ) from exc


def _number(data: dict[str, JSON], name: str) -> float:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is not a number")
    return float(value)


def _whole(data: dict[str, JSON], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is not a whole number")
    return value


@dataclass(frozen=True, slots=True)
class Throughput:
    """How many jobs of ``queue`` finished in the minute that starts at ``minute``."""

    queue: str
    minute: datetime
    completed: int = 0
    dead: int = 0
    """Jobs that entered ``dead`` (a worker's dead letter, a lease reclaimed past
    ``max_deliveries``)."""
    reclaimed: int = 0
    """Expired leases taken back from a worker that stopped answering."""

    def to_dict(self) -> dict[str, JSON]:
        return {
            "queue": self.queue,
            "minute": _iso(self.minute),
            "completed": self.completed,
            "dead": self.dead,
            "reclaimed": self.reclaimed,
        }


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """Jobs of ``queue`` finished since the store was created (never decreases: pruning jobs
    or minutes leaves it alone)."""

    queue: str
    completed: int = 0
    dead: int = 0
    reclaimed: int = 0

    def to_dict(self) -> dict[str, JSON]:
        return {
            "queue": self.queue,
            "completed": self.completed,
            "dead": self.dead,
            "reclaimed": self.reclaimed,
        }


@dataclass(frozen=True, slots=True)
class QueueConsumers:
    """The live workers that consume ``queue``, and how many jobs they run at once in all
    (each worker's whole ``concurrency``, over all its queues)."""

    queue: str
    workers: int = 0
    concurrency: int = 0

    def to_dict(self) -> dict[str, JSON]:
        return {"queue": self.queue, "workers": self.workers, "concurrency": self.concurrency}


def queue_consumers(
    workers: Sequence[WorkerInfo], queues: Iterable[str] = ()
) -> list[QueueConsumers]:
    """Per queue, its live consumers among ``workers`` (a stopping one included: it is
    listed until it is gone), for every queue of ``queues`` (those the store knows) and
    every queue a worker consumes, sorted by name; a queue nothing consumes has 0 workers."""
    names = set(queues).union(*(w.queues for w in workers))
    return [
        QueueConsumers(
            name,
            workers=sum(1 for w in workers if w.consumes(name)),
            concurrency=sum(w.concurrency for w in workers if w.consumes(name)),
        )
        for name in sorted(names)
    ]
