"""The fleet in the job store, on every backend (:mod:`forebay.fleet`): worker records that
hold for their ttl, and the per-minute and total counts of finished jobs that every node reads.

Times are given (``now=``) where expiry matters, never slept through.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from forebay import JobFilter, JobState, NewJob
from forebay.backends import Backend, PruneSpec
from forebay.fleet import WorkerInfo, minute_of
from forebay.job import Failure

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def worker(worker_id: str, *, started: float, seen: float, ttl_s: float = 15.0) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-a",
        pid=4242,
        queues=("docs", "pages"),
        concurrency=8,
        version="1.2.3",
        started_at=datetime.fromtimestamp(started, UTC),
        last_seen=datetime.fromtimestamp(seen, UTC),
        ttl_s=ttl_s,
    )


# -- worker records ----------------------------------------------------------------------------
async def test_saved_workers_are_listed_until_their_ttl_passes(backend: Backend) -> None:
    now = float(int(time.time()))  # whole seconds: the expiry instant is exact
    older = worker("w-older", started=now - 100, seen=now, ttl_s=15.0)
    newer = worker("w-newer", started=now - 10, seen=now, ttl_s=60.0)
    await asyncio.gather(backend.save_worker(newer), backend.save_worker(older))

    listed = await backend.list_workers(now=now + 1)
    assert [w.id for w in listed] == ["w-older", "w-newer"]  # by started_at
    assert listed[0] == older  # every field round-trips
    assert listed[1].queues == ("docs", "pages") and listed[1].concurrency == 8

    # A record holds until last_seen + ttl_s, not at that instant, on every backend.
    assert [w.id for w in await backend.list_workers(now=now + 14.999)] == ["w-older", "w-newer"]
    assert [w.id for w in await backend.list_workers(now=now + 15)] == ["w-newer"]
    # w-older stops heartbeating: gone once its 15 s have passed, w-newer holds for 60 s.
    assert [w.id for w in await backend.list_workers(now=now + 16)] == ["w-newer"]
    assert await backend.list_workers(now=now + 61) == []


async def test_a_heartbeat_replaces_the_record_and_extends_it(backend: Backend) -> None:
    now = time.time()
    first = worker("w1", started=now - 5, seen=now - 5, ttl_s=10.0)
    await backend.save_worker(first)
    beat = replace(
        first,
        last_seen=datetime.fromtimestamp(now, UTC),
        completed=120,
        failed=3,
        running=4,
        stopping=True,
    )
    await backend.save_worker(beat)
    [listed] = await backend.list_workers(now=now + 8)  # past the first record's ttl
    assert listed == beat


async def test_removed_workers_are_gone_and_removing_twice_is_no_error(backend: Backend) -> None:
    now = time.time()
    await backend.save_worker(worker("w1", started=now, seen=now))
    await backend.save_worker(worker("w2", started=now + 0.5, seen=now))
    await asyncio.gather(backend.remove_worker("w1"), backend.remove_worker("w1"))
    await backend.remove_worker("never-registered")
    assert [w.id for w in await backend.list_workers(now=now + 1)] == ["w2"]


async def test_expired_records_do_not_come_back_and_new_ones_still_list(backend: Backend) -> None:
    now = time.time()
    await backend.save_worker(worker("gone", started=now - 600, seen=now - 600, ttl_s=5.0))
    await backend.save_worker(worker("alive", started=now, seen=now))
    assert [w.id for w in await backend.list_workers(now=now)] == ["alive"]


async def test_many_workers_saving_at_once_are_all_listed(backend: Backend) -> None:
    now = time.time()
    workers = [worker(f"w{i:02}", started=now + i / 100, seen=now) for i in range(20)]
    await asyncio.gather(*(backend.save_worker(w) for w in reversed(workers)))
    assert [w.id for w in await backend.list_workers(now=now + 1)] == [w.id for w in workers]


# -- throughput ----------------------------------------------------------------------------------
async def _lease_all(backend: Backend, queue: str, n: int):
    leased = await backend.lease(queue=queue, limit=n, worker_id="w", lease_s=30.0)
    assert len(leased) == n
    return leased


async def test_finished_jobs_are_counted_per_queue_and_minute(backend: Backend) -> None:
    before = time.time()
    await backend.enqueue([NewJob.create("docs", {"i": i}) for i in range(5)])
    await backend.enqueue([NewJob.create("pages", {"i": i}) for i in range(3)])
    docs = await _lease_all(backend, "docs", 5)
    pages = await _lease_all(backend, "pages", 3)
    await backend.complete([j.lease for j in docs[:3]])
    await backend.dead_letter(
        [Failure(j.lease, error="boom", error_type="ValueError") for j in docs[3:]]
    )
    await backend.complete([j.lease for j in pages])
    after = time.time()

    rows = await backend.throughput(since=before - 120)
    minutes = {minute_of(before), minute_of(after)}
    assert {r.queue for r in rows} == {"docs", "pages"}
    assert all(int(r.minute.timestamp()) in minutes for r in rows)
    assert [r.queue for r in rows] == sorted(r.queue for r in rows)
    assert sum(r.completed for r in rows if r.queue == "docs") == 3
    assert sum(r.dead for r in rows if r.queue == "docs") == 2
    assert sum(r.completed for r in rows if r.queue == "pages") == 3
    assert sum(r.dead + r.reclaimed for r in rows if r.queue == "pages") == 0

    only_pages = await backend.throughput(since=before - 120, queue="pages")
    assert {r.queue for r in only_pages} == {"pages"}
    assert await backend.throughput(since=after + 120) == []  # later minutes: nothing yet

    totals = {t.queue: t for t in await backend.totals()}
    assert (totals["docs"].completed, totals["docs"].dead) == (3, 2)
    assert (totals["pages"].completed, totals["pages"].dead) == (3, 0)


async def test_refused_settles_are_not_counted(backend: Backend) -> None:
    await backend.enqueue([NewJob.create("docs", {})])
    [job] = await _lease_all(backend, "docs", 1)
    stale = job.lease
    assert await backend.complete([stale]) == []
    assert await backend.complete([stale]) == [job.id]  # refused: already completed
    [total] = await backend.totals()
    assert total.completed == 1


async def test_reclaimed_leases_are_counted_in_the_minute_of_the_reclaim(
    backend: Backend,
) -> None:
    await backend.enqueue([NewJob.create("docs", {"i": i}) for i in range(4)])
    await backend.lease(queue="docs", limit=4, worker_id="dying", lease_s=1.0)
    later = time.time() + 3600
    assert await backend.reclaim_expired(now=later) == 4
    rows = await backend.throughput(since=later - 1)
    assert [(r.queue, int(r.minute.timestamp()), r.reclaimed) for r in rows] == [
        ("docs", minute_of(later), 4)
    ]
    [total] = await backend.totals()
    assert (total.completed, total.dead, total.reclaimed) == (0, 0, 4)
    # Reclaimed jobs are queued again and finish as any other.
    again = await _lease_all(backend, "docs", 4)
    await backend.complete([j.lease for j in again])
    [total] = await backend.totals()
    assert (total.completed, total.reclaimed) == (4, 4)


async def test_concurrent_finishes_of_two_queues_are_all_counted(backend: Backend) -> None:
    for queue in ("a", "b"):
        await backend.enqueue([NewJob.create(queue, {"i": i}) for i in range(40)])
    leased = {q: await _lease_all(backend, q, 40) for q in ("a", "b")}
    await asyncio.gather(
        *(backend.complete([j.lease]) for q in ("b", "a") for j in leased[q]),
    )
    totals = {t.queue: t.completed for t in await backend.totals()}
    assert totals == {"a": 40, "b": 40}
    rows = await backend.throughput(since=time.time() - 120)
    assert sum(r.completed for r in rows) == 80


async def test_prune_deletes_old_minutes_but_never_the_totals(backend: Backend) -> None:
    old = time.time() - 3 * 24 * 3600  # a lease, and its reclaim, three days ago
    due = datetime.fromtimestamp(old - 60, UTC)
    await backend.enqueue([NewJob.create("docs", {"i": i}, run_at=due) for i in range(2)])
    await backend.lease(queue="docs", limit=2, worker_id="dying", lease_s=1.0, now=old)
    assert await backend.reclaim_expired(now=old + 10) == 2
    await backend.complete([j.lease for j in await _lease_all(backend, "docs", 2)])
    assert len(await backend.throughput(since=old - 60)) == 2  # the old minute and this one

    cut = time.time() - 24 * 3600
    spec = PruneSpec(completed_before=0, dead_before=0, cancelled_before=0, throughput_before=cut)
    await backend.prune(spec)
    rows = await backend.throughput(since=old - 60)
    assert [r.completed for r in rows] == [2] and rows[0].minute.timestamp() >= cut - 60
    [total] = await backend.totals()
    assert (total.completed, total.reclaimed) == (2, 2)


async def test_an_empty_store_counts_nothing(backend: Backend) -> None:
    assert await backend.throughput(since=0) == []
    assert await backend.totals() == []
    assert await backend.list_workers() == []


# -- trace context -----------------------------------------------------------------------------
async def test_a_jobs_traceparent_is_stored_and_read_back(backend: Backend) -> None:
    [traced, plain] = await backend.enqueue(
        [NewJob.create("docs", {}, traceparent=TRACE), NewJob.create("docs", {})]
    )
    assert traced.traceparent == TRACE and plain.traceparent is None
    leased = await _lease_all(backend, "docs", 2)
    assert {j.id: j.traceparent for j in leased} == {traced.id: TRACE, plain.id: None}
    stored = await backend.get_job(traced.id)
    assert stored is not None and stored.traceparent == TRACE
    listed = await backend.list_jobs(JobFilter(queue="docs", state=JobState.RUNNING))
    assert {j.traceparent for j in listed} == {TRACE, None}


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-trace",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ],
)
def test_a_malformed_traceparent_is_refused(bad: str) -> None:
    from forebay.errors import InvalidPayload

    with pytest.raises(InvalidPayload, match="traceparent"):
        NewJob.create("docs", {}, traceparent=bad)
