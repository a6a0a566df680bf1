"""The store metrics, as a scrape exposes them: what an operator's dashboards and alert rules read.

* every queue the store counts or a live worker consumes has a ``forebay_queue_workers`` sample
  (0 when nothing consumes it: the "no live worker" alert needs that zero);
* a stopping worker still counts until it is gone, as in ``forebay workers`` and ``/readyz``;
* ``forebay_queue_finished_total`` is the store's totals, one sample per outcome;
* a store that does not answer sets ``forebay_backend_up`` to 0 and keeps the last values;
* a queue that disappears from the store disappears from the gauges;
* every metric is listed in docs/metrics.md and in the table of :mod:`forebay.metrics`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from forebay.errors import BackendUnavailable
from forebay.fleet import QueueTotals, WorkerInfo
from forebay.job import QueueCounts
from forebay.metrics import Metrics

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def worker(name: str, *queues: str, stopping: bool = False) -> WorkerInfo:
    return WorkerInfo(
        id=name,
        host="h",
        pid=1,
        queues=queues,
        concurrency=2,
        version="0",
        started_at=NOW,
        last_seen=NOW,
        ttl_s=15,
        stopping=stopping,
    )


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_store_metrics_name_every_queue_with_its_consumers() -> None:
    metrics = Metrics()
    counts = [
        QueueCounts("documents", queued=5, oldest_queued_age_s=12.5),
        QueueCounts("images", queued=2),
        QueueCounts("reports", queued=1),
    ]
    totals = [QueueTotals("documents", completed=7, dead=2, reclaimed=1)]
    workers = [
        worker("a", "documents", "exports"),
        worker("b", "documents"),
        worker("c", "images", stopping=True),
    ]
    metrics.update_store(counts, totals, workers)

    assert value(metrics, "forebay_backend_up") == 1
    assert value(metrics, "forebay_workers") == 3
    assert value(metrics, "forebay_queue_workers", queue="documents") == 2
    assert value(metrics, "forebay_queue_workers", queue="exports") == 1  # consumed, no jobs yet
    assert value(metrics, "forebay_queue_workers", queue="images") == 1  # until it is gone
    assert value(metrics, "forebay_queue_workers", queue="reports") == 0  # jobs, no consumer
    assert value(metrics, "forebay_queue_jobs", queue="documents", state="queued") == 5
    assert value(metrics, "forebay_queue_oldest_queued_age_seconds", queue="documents") == 12.5
    finished = "forebay_queue_finished_total"
    assert value(metrics, finished, queue="documents", outcome="completed") == 7
    assert value(metrics, finished, queue="documents", outcome="dead") == 2
    assert value(metrics, finished, queue="documents", outcome="reclaimed") == 1
    assert value(metrics, finished, queue="images", outcome="completed") is None


def test_a_store_that_does_not_answer_keeps_the_last_values() -> None:
    metrics = Metrics()
    metrics.update_store([QueueCounts("documents", queued=1)], [QueueTotals("documents", 3)], [])
    metrics.update_store(None)
    assert value(metrics, "forebay_backend_up") == 0
    assert value(metrics, "forebay_queue_finished_total", queue="documents", outcome="completed")
    assert value(metrics, "forebay_queue_workers", queue="documents") == 0


def test_a_queue_gone_from_the_store_leaves_the_gauges() -> None:
    metrics = Metrics()
    metrics.update_store([QueueCounts("old", queued=1)], [], [worker("a", "old")])
    metrics.update_store([QueueCounts("new", queued=1)], [], [])
    assert value(metrics, "forebay_queue_workers", queue="old") is None
    assert value(metrics, "forebay_queue_jobs", queue="old", state="queued") is None
    assert value(metrics, "forebay_queue_workers", queue="new") == 0
    assert value(metrics, "forebay_workers") == 0


class FailingStore:
    async def counts(self) -> list[QueueCounts]:
        raise BackendUnavailable("the store is down")

    async def totals(self) -> list[QueueTotals]:
        raise AssertionError("not reached")

    async def list_workers(self) -> list[WorkerInfo]:
        raise AssertionError("not reached")


class SlowStore(FailingStore):
    async def counts(self) -> list[QueueCounts]:
        await asyncio.Event().wait()  # never answers
        return []


async def test_read_store_marks_a_failing_or_silent_store_down() -> None:
    for store in (FailingStore(), SlowStore()):
        metrics = Metrics()
        metrics.update_store([QueueCounts("documents")], [], [])
        await metrics.read_store(store, timeout_s=0.05)
        assert value(metrics, "forebay_backend_up") == 0


def test_every_exported_metric_is_documented() -> None:
    import forebay.metrics

    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "metrics.md").read_text()
    reference = forebay.metrics.__doc__ or ""
    text = Metrics().exposition().decode()
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"| `{name}` |" in docs, f"docs/metrics.md does not list {name}"
        assert f"``{name}``" in reference, f"forebay.metrics' table does not list {name}"
