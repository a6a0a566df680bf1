"""The backend contract: every rule of DESIGN §3 that a job store must keep, run on every backend.

Time never passes by sleeping here: scheduling is tested with run_at in the past and the future,
and lease expiry with ``reclaim_expired(now=...)`` given a time past the lease.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from datetime import UTC, datetime, timedelta

import pytest

from forebay import ConfigError, InvalidPayload, JobFilter, JobState, NewJob, QueueFull
from forebay.backends import Backend, PruneSpec, backend_from_url
from forebay.job import Deferral, Failure, Lease, PayloadText, Retry

WORKER = "test-worker"
FAR = 10_000.0  # seconds: "well past any lease"


def new(queue: str = "q", payload: object = None, **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": 0} if payload is None else payload, **kw)  # type: ignore[arg-type]


async def lease(backend: Backend, queue: str = "q", limit: int = 10, lease_s: float = 30.0):
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=lease_s)


# -- enqueue ---------------------------------------------------------------------------------
async def test_enqueue_returns_stored_jobs_in_order(backend: Backend) -> None:
    jobs = await backend.enqueue([new(payload={"i": i}) for i in range(5)])
    assert [j.payload for j in jobs] == [{"i": i} for i in range(5)]
    assert len({j.id for j in jobs}) == 5
    assert all(j.state is JobState.QUEUED and j.created for j in jobs)
    stored = await backend.get_job(jobs[2].id)
    assert stored is not None
    assert stored.payload == {"i": 2} and stored.state is JobState.QUEUED
    assert stored.attempt == 0 and stored.deliveries == 0
    assert stored.created_at is not None and stored.created_at.tzinfo is not None


async def test_enqueue_is_durable_across_reopen(url: str, backend: Backend) -> None:
    job = (await backend.enqueue([new(payload={"keep": True}, key="durable")]))[0]
    other = backend_from_url(url)
    await other.open()
    try:
        seen = await other.get_job(job.id)
    finally:
        await other.close()
    assert seen is not None and seen.payload == {"keep": True} and seen.key == "durable"


async def test_key_dedupes_and_returns_the_existing_job(backend: Backend) -> None:
    first = (await backend.enqueue([new(payload={"v": 1}, key="doc-42")]))[0]
    again = (await backend.enqueue([new(payload={"v": 2}, key="doc-42")]))[0]
    assert first.created and not again.created
    assert again.id == first.id and again.payload == {"v": 1}
    # the same key on another queue is another job
    other = (await backend.enqueue([new("other", key="doc-42")]))[0]
    assert other.created and other.id != first.id
    # duplicates inside one batch collapse too
    batch = await backend.enqueue([new(key="k2"), new(key="k2"), new()])
    assert batch[0].created and not batch[1].created and batch[1].id == batch[0].id
    assert batch[2].created


async def test_key_dedupes_after_the_job_completed(backend: Backend) -> None:
    job = (await backend.enqueue([new(key="done-once")]))[0]
    [leased] = await lease(backend)
    assert await backend.complete([leased.lease]) == []
    again = (await backend.enqueue([new(key="done-once")]))[0]
    assert not again.created and again.id == job.id and again.state is JobState.COMPLETED


async def test_max_depth_refuses_the_whole_call_and_stores_nothing(backend: Backend) -> None:
    await backend.enqueue([new(), new()], max_depth={"q": 3})
    with pytest.raises(QueueFull) as info:
        await backend.enqueue([new(), new()], max_depth={"q": 3})
    assert info.value.queue == "q" and info.value.max_depth == 3
    counts = {c.queue: c for c in await backend.counts()}
    assert counts["q"].queued == 2
    # running jobs count toward depth, finished ones do not
    [a, _b] = await lease(backend)
    await backend.complete([a.lease])
    await backend.enqueue([new(), new()], max_depth={"q": 3})
    with pytest.raises(QueueFull):
        await backend.enqueue([new()], max_depth={"q": 3})


async def test_concurrent_enqueues_each_get_their_own_answer(backend: Backend) -> None:
    """Many callers at once (group-committed together) still see exactly their own jobs."""
    keys = [f"k{i % 10}" for i in range(50)]
    results = await asyncio.gather(
        *(backend.enqueue([new(payload={"i": i}, key=k)]) for i, k in enumerate(keys))
    )
    by_key: dict[str, set[int]] = {}
    created = 0
    for (job,), key in zip(results, keys, strict=True):
        assert job.key == key
        by_key.setdefault(key, set()).add(job.id)
        created += job.created
    assert created == 10 and all(len(ids) == 1 for ids in by_key.values())
    plain = await asyncio.gather(*(backend.enqueue([new(payload={"p": i})]) for i in range(30)))
    assert [j.payload for (j,) in plain] == [{"p": i} for i in range(30)]
    assert len({j.id for (j,) in plain}) == 30


async def test_concurrent_enqueues_respect_max_depth(backend: Backend) -> None:
    async def one(i: int) -> bool:
        try:
            await backend.enqueue([new(payload={"i": i})], max_depth={"q": 5})
        except QueueFull:
            return False
        return True

    accepted = await asyncio.gather(*(one(i) for i in range(20)))
    assert sum(accepted) == 5
    counts = {c.queue: c for c in await backend.counts()}
    assert counts["q"].queued == 5


async def test_a_callers_connection_only_where_enqueue_can_join_it(backend: Backend) -> None:
    if backend.capabilities.transactional_enqueue:
        pytest.skip("covered by the backend's own transactional enqueue tests")
    with pytest.raises(ConfigError, match="cannot join your transaction"):
        await backend.enqueue([new()], connection=object())
    assert await backend.counts() == []  # nothing stored


def test_invalid_payloads_are_refused_before_the_store() -> None:
    with pytest.raises(InvalidPayload, match="JSON"):
        new(payload={"when": datetime.now(UTC)})
    with pytest.raises(InvalidPayload, match="JSON"):
        new(payload={"x": float("nan")})
    with pytest.raises(InvalidPayload, match="queue"):
        new(queue="bad queue!")
    with pytest.raises(InvalidPayload, match="timezone"):
        new(run_at=datetime(2030, 1, 1))  # naive
    with pytest.raises(InvalidPayload, match="priority"):
        new(priority="high")
    with pytest.raises(InvalidPayload, match="between 1970 and 9000"):
        new(run_at=datetime(1, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidPayload, match="delay"):
        new(delay=-1)


# -- leasing ---------------------------------------------------------------------------------
async def test_lease_order_priority_then_run_at_then_enqueue_order(backend: Backend) -> None:
    now = datetime.now(UTC)
    low = (await backend.enqueue([new(payload="low", priority=0)]))[0]
    high_late = (
        await backend.enqueue(
            [new(payload="high-late", priority=5, run_at=now - timedelta(seconds=1))]
        )
    )[0]
    high_early = (
        await backend.enqueue(
            [new(payload="high-early", priority=5, run_at=now - timedelta(seconds=10))]
        )
    )[0]
    low2 = (await backend.enqueue([new(payload="low2", priority=0)]))[0]
    first = await lease(backend, limit=1)
    rest = await lease(backend, limit=10)
    order = [j.id for j in first + rest]
    assert order == [high_early.id, high_late.id, low.id, low2.id]


async def test_lease_marks_running_with_a_token_and_counts(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    before = time.time()
    [leased] = await lease(backend, lease_s=30)
    assert leased.id == job.id and leased.state is JobState.RUNNING
    assert leased.lease_token and leased.worker_id == WORKER
    assert leased.attempt == 1 and leased.deliveries == 1
    assert leased.lease_expires_at is not None
    assert before + 29 <= leased.lease_expires_at.timestamp() <= time.time() + 31
    assert await lease(backend) == []  # nothing else to lease
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.RUNNING


async def test_lease_respects_limit_and_queue(backend: Backend) -> None:
    await backend.enqueue([new() for _ in range(5)] + [new("other")])
    assert len(await lease(backend, limit=3)) == 3
    assert len(await lease(backend, limit=3)) == 2
    others = await lease(backend, queue="other")
    assert [j.queue for j in others] == ["other"]


async def test_scheduled_jobs_wait_for_run_at(backend: Backend) -> None:
    now = datetime.now(UTC)
    later = (await backend.enqueue([new(run_at=now + timedelta(hours=1))]))[0]
    due = (await backend.enqueue([new(run_at=now - timedelta(seconds=1))]))[0]
    delayed = (await backend.enqueue([new(delay=timedelta(minutes=5))]))[0]
    leased = await lease(backend)
    assert [j.id for j in leased] == [due.id]
    assert later.run_at is not None and abs(later.run_at.timestamp() - (now.timestamp() + 3600)) < 1
    assert delayed.run_at is not None and delayed.run_at > now + timedelta(minutes=4)
    counts = {c.queue: c for c in await backend.counts()}
    assert counts["q"].scheduled == 2 and counts["q"].queued == 2


async def test_two_backends_never_lease_the_same_job(url: str, backend: Backend) -> None:
    await backend.enqueue([new(payload={"i": i}) for i in range(300)])
    other = backend_from_url(url)
    await other.open()
    try:

        async def drain(store: Backend) -> list[int]:
            got: list[int] = []
            while batch := await store.lease(queue="q", limit=7, worker_id=WORKER, lease_s=30):
                got.extend(j.id for j in batch)
            return got

        a, b = await asyncio.gather(drain(backend), drain(other))
    finally:
        await other.close()
    assert len(a) + len(b) == 300
    assert len(set(a) | set(b)) == 300  # no job leased twice


# -- leases: expiry, stale tokens, extension -------------------------------------------------
async def test_expired_lease_is_reclaimed_and_redelivered(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [first] = await lease(backend, lease_s=30)
    assert await backend.reclaim_expired(now=time.time()) == 0  # not expired yet
    assert await backend.reclaim_expired(now=time.time() + FAR) == 1
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.QUEUED
    assert stored.attempt == 0  # a crash does not spend an attempt
    assert stored.deliveries == 1  # but it is counted as a delivery
    assert stored.error_type == "LeaseExpired"
    [second] = await lease(backend)
    assert second.id == job.id and second.deliveries == 2 and second.attempt == 1
    assert second.lease_token != first.lease_token


async def test_stale_lease_token_is_refused(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [old] = await lease(backend)
    await backend.reclaim_expired(now=time.time() + FAR)
    [current] = await lease(backend)
    assert await backend.complete([old.lease]) == [job.id]
    assert await backend.retry([Retry(old.lease, time.time(), "x", "X")]) == [job.id]
    assert await backend.dead_letter([Failure(old.lease, "x", "X")]) == [job.id]
    assert await backend.defer([Deferral(old.lease, time.time(), "x")]) == [job.id]
    assert await backend.release([old.lease]) == [job.id]
    assert await backend.extend([old.lease], lease_s=30) == [job.id]
    assert await backend.progress(old.lease, pct=10, message="stale") is False
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.RUNNING
    assert stored.lease_token == current.lease_token
    assert await backend.complete([current.lease]) == []
    assert await backend.complete([current.lease]) == [job.id]  # a second ack is refused too


async def test_extend_pushes_the_lease_so_it_is_not_reclaimed(backend: Backend) -> None:
    await backend.enqueue([new()])
    [job] = await lease(backend, lease_s=1)
    assert await backend.extend([job.lease], lease_s=3600) == []
    assert await backend.reclaim_expired(now=time.time() + 60) == 0
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.lease_expires_at is not None
    assert stored.lease_expires_at.timestamp() > time.time() + 3000


async def test_extend_reports_only_the_lost_leases(backend: Backend) -> None:
    await backend.enqueue([new(), new()])
    a, b = await lease(backend)
    bogus = Lease(b.id, "not-the-token")
    assert await backend.extend([a.lease, bogus], lease_s=30) == [b.id]


async def test_a_large_lease_takes_the_best_jobs_in_order_and_settles_them(
    backend: Backend,
) -> None:
    await backend.enqueue([new(payload={"i": i}, priority=i % 3) for i in range(250)])
    leased = await backend.lease(queue="q", limit=300, worker_id=WORKER, lease_s=30)
    assert len(leased) == 250
    assert [(-j.priority, j.id) for j in leased] == sorted((-j.priority, j.id) for j in leased)
    assert await lease(backend) == []
    assert await backend.complete([j.lease for j in leased]) == []
    [counts] = [c for c in await backend.counts() if c.queue == "q"]
    assert counts.completed == 250 and counts.running == 0


async def test_a_leased_payload_is_available_as_its_stored_text(backend: Backend) -> None:
    payload = {"doc": "é", "n": [1, 2.5, None], "big": 2**70}
    await backend.enqueue([new(payload=payload)])
    [job] = await backend.lease(queue="q", limit=1, worker_id=WORKER, lease_s=30)
    assert isinstance(job.payload_text, PayloadText)
    assert job.payload_text.parse() == payload
    crossed = pickle.loads(pickle.dumps(job))  # crosses processes as that text
    assert isinstance(crossed.payload_text, PayloadText)
    assert crossed.payload == payload and job.payload == payload


# -- outcomes --------------------------------------------------------------------------------
async def test_complete_many(backend: Backend) -> None:
    await backend.enqueue([new() for _ in range(4)])
    jobs = await lease(backend)
    assert await backend.complete([j.lease for j in jobs]) == []
    for j in jobs:
        stored = await backend.get_job(j.id)
        assert stored is not None and stored.state is JobState.COMPLETED
        assert stored.finished_at is not None and stored.lease_token is None


async def test_retry_requeues_at_run_at_with_the_attempt_spent(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [leased] = await lease(backend)
    later = time.time() + 3600
    assert await backend.retry([Retry(leased.lease, later, "ValueError: boom", "ValueError")]) == []
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.QUEUED
    assert stored.attempt == 1 and stored.error == "ValueError: boom"
    assert stored.error_type == "ValueError"
    assert stored.run_at is not None and abs(stored.run_at.timestamp() - later) < 0.01
    assert await lease(backend) == []  # waiting out its backoff
    counts = {c.queue: c for c in await backend.counts()}
    assert counts["q"].retrying == 1 and counts["q"].scheduled == 1
    # a retry due now is leased again, as attempt 2
    job2 = (await backend.enqueue([new("r")]))[0]
    [l2] = await lease(backend, "r")
    await backend.retry([Retry(l2.lease, time.time() - 1, "boom", "E")])
    [again] = await lease(backend, "r")
    assert again.id == job2.id and again.attempt == 2 and again.deliveries == 2


async def test_dead_letter(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [leased] = await lease(backend)
    assert (
        await backend.dead_letter([Failure(leased.lease, "PermanentError: no", "PermanentError")])
        == []
    )
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.DEAD
    assert stored.error_type == "PermanentError" and stored.finished_at is not None
    assert await lease(backend) == []


async def test_defer_gives_back_the_attempt_and_delivery(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [leased] = await lease(backend)
    assert await backend.defer([Deferral(leased.lease, time.time() - 1, "downstream busy")]) == []
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.QUEUED
    assert (stored.attempt, stored.deliveries, stored.defers) == (0, 0, 1)
    [again] = await lease(backend)
    assert (again.attempt, again.deliveries, again.defers) == (1, 1, 1)
    await backend.defer([Deferral(again.lease, time.time() + 3600, "later")])
    assert await lease(backend) == []


async def test_release_gives_back_the_attempt_and_delivery(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [leased] = await lease(backend)
    assert await backend.release([leased.lease]) == []
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.QUEUED
    assert (stored.attempt, stored.deliveries) == (0, 0)
    assert [j.id for j in await lease(backend)] == [job.id]


async def test_progress_is_visible_while_running(backend: Backend) -> None:
    job = (await backend.enqueue([new()]))[0]
    [leased] = await lease(backend)
    assert await backend.progress(leased.lease, pct=40, message="parsed") is True
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.progress_pct == 40 and stored.progress_message == "parsed"


# -- operator actions ------------------------------------------------------------------------
async def test_cancel_queued_and_running_jobs_not_finished_ones(backend: Backend) -> None:
    a, b, c = await backend.enqueue([new(), new(), new()])
    running = await lease(backend, limit=2)
    queued = next(j for j in (a, b, c) if j.id not in {r.id for r in running})
    assert await backend.complete([running[1].lease]) == []
    wanted = [a.id, b.id, c.id, 999_999]
    assert await backend.cancel(wanted) == sorted([queued.id, running[0].id])
    for job_id in (queued.id, running[0].id):
        stored = await backend.get_job(job_id)
        assert stored is not None and stored.state is JobState.CANCELLED
        assert stored.finished_at is not None and stored.lease_expires_at is None
    done = await backend.get_job(running[1].id)
    assert done is not None and done.state is JobState.COMPLETED


async def _make_dead(backend: Backend, queue: str, error_type: str, n: int = 1) -> list[int]:
    await backend.enqueue([new(queue) for _ in range(n)])
    jobs = await lease(backend, queue)
    await backend.dead_letter([Failure(j.lease, f"{error_type}: x", error_type) for j in jobs])
    return [j.id for j in jobs]


async def test_replay_dead_jobs_with_filters_and_dry_run(backend: Backend) -> None:
    a = await _make_dead(backend, "a", "ValueError", 2)
    b = await _make_dead(backend, "b", "KeyError", 1)
    assert await backend.replay(JobFilter(queue="a"), dry_run=True) == 2
    stored = await backend.get_job(a[0])
    assert stored is not None and stored.state is JobState.DEAD  # dry run changed nothing
    assert await backend.replay(JobFilter(error_type="KeyError")) == 1
    replayed = await backend.get_job(b[0])
    assert replayed is not None and replayed.state is JobState.QUEUED
    assert (replayed.attempt, replayed.deliveries, replayed.defers) == (0, 0, 0)
    assert replayed.finished_at is None
    assert [j.id for j in await lease(backend, "b")] == b
    assert await backend.replay(JobFilter(ids=(a[1],))) == 1
    assert await backend.replay(JobFilter()) == 1  # the last dead one
    assert await backend.replay(JobFilter()) == 0


async def test_replay_with_a_time_range(backend: Backend) -> None:
    await _make_dead(backend, "a", "E", 2)
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await backend.replay(JobFilter(since=future), dry_run=True) == 0
    assert await backend.replay(JobFilter(until=future), dry_run=True) == 2


async def test_purge_dead_jobs(backend: Backend) -> None:
    a = await _make_dead(backend, "a", "ValueError", 2)
    await _make_dead(backend, "b", "KeyError", 1)
    live = (await backend.enqueue([new("a")]))[0]
    assert await backend.purge(JobFilter(queue="a"), dry_run=True) == 2
    assert await backend.purge(JobFilter(queue="a")) == 2
    assert await backend.get_job(a[0]) is None
    assert await backend.get_job(live.id) is not None  # only dead jobs are purged
    assert await backend.purge(JobFilter()) == 1


async def test_prune_deletes_finished_jobs_past_retention(backend: Backend) -> None:
    done = (await backend.enqueue([new(key="reuse")]))[0]
    [leased] = await lease(backend)
    await backend.complete([leased.lease])
    dead = await _make_dead(backend, "d", "E")
    queued = (await backend.enqueue([new("keep")]))[0]
    now = time.time()
    # retention not yet over: nothing goes
    assert await backend.prune(PruneSpec(now - 60, now - 60, now - 60)) == 0
    # completed past retention, dead not yet
    assert await backend.prune(PruneSpec(now + 60, now - 60, now + 60)) == 1
    assert await backend.get_job(done.id) is None
    assert await backend.get_job(dead[0]) is not None
    assert await backend.prune(PruneSpec(now + 60, now + 60, now + 60)) == 1
    assert await backend.get_job(queued.id) is not None
    # once pruned, the key may be used again, and ids are never reused
    again = (await backend.enqueue([new(key="reuse")]))[0]
    assert again.created and again.id > queued.id


async def test_prune_is_bounded(backend: Backend) -> None:
    await backend.enqueue([new() for _ in range(25)])
    jobs = await lease(backend, limit=25)
    await backend.complete([j.lease for j in jobs])
    far = time.time() + 60
    assert await backend.prune(PruneSpec(far, far, far, limit=10)) == 10
    assert await backend.prune(PruneSpec(far, far, far, limit=10)) == 10
    assert await backend.prune(PruneSpec(far, far, far, limit=10)) == 5


# -- reading ---------------------------------------------------------------------------------
async def test_counts_per_queue_and_state(backend: Backend) -> None:
    await backend.enqueue([new("a") for _ in range(4)] + [new("b")])
    x, y, _z = await lease(backend, "a", limit=3)
    await backend.complete([x.lease])
    await backend.dead_letter([Failure(y.lease, "e", "E")])
    counts = {c.queue: c for c in await backend.counts()}
    assert (counts["a"].queued, counts["a"].running, counts["a"].completed, counts["a"].dead) == (
        1,
        1,
        1,
        1,
    )
    assert counts["a"].depth == 2
    assert counts["b"].queued == 1 and counts["b"].running == 0
    assert counts["a"].oldest_queued_age_s is not None and counts["a"].oldest_queued_age_s >= 0
    assert [c.queue for c in await backend.counts()] == ["a", "b"]


async def test_list_jobs_filters_and_pages_newest_first(backend: Backend) -> None:
    jobs = await backend.enqueue([new("a", payload={"i": i}) for i in range(5)] + [new("b")])
    a_ids = [j.id for j in jobs[:5]]
    listed = await backend.list_jobs(JobFilter(queue="a"), limit=3)
    assert [j.id for j in listed] == sorted(a_ids, reverse=True)[:3]
    page2 = await backend.list_jobs(JobFilter(queue="a"), limit=3, before_id=listed[-1].id)
    assert [j.id for j in page2] == sorted(a_ids, reverse=True)[3:]
    [leased] = await lease(backend, "b")
    running = await backend.list_jobs(JobFilter(state=JobState.RUNNING))
    assert [j.id for j in running] == [leased.id]
    assert [j.id for j in await backend.list_jobs(JobFilter(ids=(a_ids[0], a_ids[4])))] == [
        a_ids[4],
        a_ids[0],
    ]


async def test_get_missing_job_is_none(backend: Backend) -> None:
    assert await backend.get_job(123_456_789) is None


# -- waiting for work ------------------------------------------------------------------------
async def test_wait_for_work_wakes_on_enqueue(url: str, backend: Backend) -> None:
    producer = backend_from_url(url)  # another connection, as another process would have
    await producer.open()
    try:
        # A first call marks what this consumer has seen; work committed after it must wake
        # the next call, however the two tasks below happen to be scheduled.
        await backend.wait_for_work(["q"], timeout_s=0.01)
        waiter = asyncio.create_task(backend.wait_for_work(["q"], timeout_s=30))
        started = time.monotonic()
        await producer.enqueue([new()])
        await asyncio.wait_for(waiter, timeout=10)
        assert time.monotonic() - started < 5  # woken by the enqueue, not by the 30 s timeout
    finally:
        await producer.close()


async def test_work_committed_between_an_empty_lease_and_the_first_wait_is_not_missed(
    url: str, backend: Backend
) -> None:
    producer = backend_from_url(url)
    await producer.open()
    try:
        assert await lease(backend) == []  # a worker finds nothing ...
        await producer.enqueue([new()])  # ... another process commits a job ...
        # ... and the worker's first wait must not sleep through it.
        await asyncio.wait_for(backend.wait_for_work(["q"], timeout_s=30), timeout=10)
        assert len(await lease(backend)) == 1
    finally:
        await producer.close()


async def test_wait_for_work_times_out(backend: Backend) -> None:
    started = time.monotonic()
    await backend.wait_for_work(["nothing-here"], timeout_s=0.2)
    assert time.monotonic() - started < 5
