"""The sink seam: where a handler's results leave forebay for a system of record.

Why the cut is here: forebay delivers a job *at least once* (a worker may die after writing
and before recording the outcome), so exactly-once *effect* has to be made where the data lands.
Every sink therefore promises the same three things, whatever it writes to:

* **open / write batch / close** — ``open`` is idempotent and may be skipped (the first
  ``write`` opens); ``close`` releases connections and flushes what is pending.
* **writing the same batch twice is a no-op** — a batch that was (partly) written before is
  recognised by the records' own identity (a key and a version, or a content hash), never by
  remembering the job, so a redelivered job changes nothing.
* **errors are classified at the boundary** — the destination being down raises
  :class:`~forebay.SinkUnavailable` (the job waits and is retried); the destination refusing
  the data raises :class:`~forebay.SinkRejected` (retrying cannot help: dead letter).

A write answers with a :class:`WriteResult`: how many records were applied, and how many were
skipped and why (``older``: a newer version is stored; ``duplicate``: this version is stored;
``deleted``: a tombstone is stored), so duplicates are visible in metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias, TypeVar

__all__ = ["WRITE_OUTCOMES", "Sink", "WriteOutcome", "WriteResult"]

WriteOutcome: TypeAlias = Literal["applied", "older", "duplicate", "deleted"]
"""What a write did with one record (not to be confused with a job's
:class:`~forebay.outcome.JobOutcome`)."""
WRITE_OUTCOMES: Final[tuple[WriteOutcome, ...]] = ("applied", "older", "duplicate", "deleted")

BatchT_contra = TypeVar("BatchT_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Counts of records per ``(table, outcome)`` for one write."""

    counts: Mapping[tuple[str, WriteOutcome], int] = field(default_factory=dict)

    def applied(self, table: str | None = None) -> int:
        return self._sum("applied", table)

    def skipped(self, outcome: WriteOutcome | None = None, table: str | None = None) -> int:
        if outcome is not None:
            return self._sum(outcome, table)
        return sum(self._sum(o, table) for o in WRITE_OUTCOMES if o != "applied")

    def _sum(self, outcome: WriteOutcome, table: str | None) -> int:
        return sum(
            n for (t, o), n in self.counts.items() if o == outcome and (table is None or t == table)
        )

    @classmethod
    def merge(cls, results: Iterable[WriteResult]) -> WriteResult:
        total: dict[tuple[str, WriteOutcome], int] = {}
        for result in results:
            for key, n in result.counts.items():
                total[key] = total.get(key, 0) + n
        return cls(total)


class Sink(Protocol[BatchT_contra]):
    """A destination a handler writes to idempotently. See the module docstring."""

    async def open(self) -> None:
        """Connect / prepare (create schema, folders). Idempotent."""

    async def write(self, batch: BatchT_contra) -> WriteResult:
        """Write one batch atomically where the destination allows it; a repeat is a no-op."""

    async def close(self) -> None:
        """Flush what is pending and release resources. Idempotent."""
