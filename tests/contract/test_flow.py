"""Flow control held by the job store, on every backend: rate limits, caps across the fleet,
fair leasing, priority aging, and tenants (docs/flow-control.md).

Time is a fake clock: every lease is given ``now`` (a little after the jobs were enqueued, so
they are due), and a rate's tokens come back by moving ``now``, never by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from forebay import JobFilter, JobState, NewJob
from forebay.backends import Backend
from forebay.errors import QueueFull, TenantQuotaFull
from forebay.flow import FlowLimits, Rate
from forebay.job import Retry
from forebay.runs import NewRun

WORKER = "flow-worker"


def new(queue: str = "q", n: int = 0, **kw: object) -> NewJob:
    return NewJob.create(queue, {"n": n}, **kw)  # type: ignore[arg-type]


async def lease(backend: Backend, now: float, limit: int = 100, queue: str = "q"):
    return await backend.lease(queue=queue, limit=limit, worker_id=WORKER, lease_s=30.0, now=now)


@pytest.fixture
def t0() -> float:
    """A fake "now" just after the test's jobs are enqueued (they are all due at it)."""
    return time.time() + 1.0


# -- queue-wide rate ---------------------------------------------------------------------------
async def test_a_queue_rate_starts_no_more_than_its_tokens(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(rate=Rate(5, 1.0)))
    await backend.enqueue([new(n=i) for i in range(20)])
    first = await lease(backend, t0)
    assert len(first) == 5  # a full bucket: one burst
    assert [j.payload["n"] for j in first] == [0, 1, 2, 3, 4]  # still best first
    held = await lease(backend, t0)
    assert list(held) == [] and held.throttled_until == pytest.approx(t0 + 0.2, abs=1e-3)
    # nothing held back was touched: no attempt spent, still queued
    waiting = await backend.list_jobs(JobFilter(queue="q", state=JobState.QUEUED), limit=100)
    assert len(waiting) == 15 and all(j.attempt == 0 for j in waiting)
    assert len(await lease(backend, t0 + 0.2)) == 1  # one token per 0.2 s
    assert len(await lease(backend, t0 + 1.2)) == 5  # refilled, at most one burst
    assert len(await lease(backend, t0 + 100.0)) == 5  # a long idle still gives one burst


async def test_over_a_window_starts_stay_within_the_rate_plus_one_burst(
    backend: Backend, t0: float
) -> None:
    await backend.set_queue("q", limits=FlowLimits(rate=Rate(10, 1.0, burst=3)))
    await backend.enqueue([new(n=i) for i in range(200)])
    started = 0
    for step in range(50):  # 5 s of leases every 0.1 s
        started += len(await lease(backend, t0 + step * 0.1, limit=50))
    # at most 10/s * 4.9 s + a burst of 3; and with a backlog the rate is used
    assert started <= 10 * 4.9 + 3
    assert started >= 0.9 * 10 * 4.9


# -- per-key rate ------------------------------------------------------------------------------
async def test_each_rate_key_has_its_own_bucket(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(rate_per_key=Rate(2, 1.0)))
    await backend.enqueue([new(n=i, rate_key="a") for i in range(6)])
    await backend.enqueue([new(n=10 + i, rate_key="b") for i in range(6)])
    await backend.enqueue([new(n=100)])  # no key: not limited by a key
    got = await lease(backend, t0)
    assert Counter(j.rate_key for j in got) == {"a": 2, "b": 2, None: 1}
    assert [j.payload["n"] for j in got if j.rate_key == "a"] == [0, 1]
    again = await lease(backend, t0)
    assert list(again) == [] and again.throttled_until == pytest.approx(t0 + 0.5, abs=1e-3)
    later = await lease(backend, t0 + 0.5)
    assert Counter(j.rate_key for j in later) == {"a": 1, "b": 1}


async def test_a_throttled_key_does_not_hold_back_other_keys(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(rate_per_key=Rate(1, 60.0)))
    await backend.enqueue([new(n=i, rate_key="hot") for i in range(50)])
    await backend.enqueue([new(n=100 + i, rate_key=f"k{i}") for i in range(5)])
    got = await lease(backend, t0, limit=10)
    assert Counter(j.rate_key for j in got) == {"hot": 1, **{f"k{i}": 1 for i in range(5)}}


# -- concurrency caps --------------------------------------------------------------------------
async def test_global_concurrency_caps_running_jobs(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(concurrency=3))
    await backend.enqueue([new(n=i) for i in range(10)])
    got = await lease(backend, t0)
    assert len(got) == 3
    assert list(await lease(backend, t0)) == []
    await backend.complete([got[0].lease])
    assert len(await lease(backend, t0)) == 1
    counts = {c.queue: c for c in await backend.counts(now=t0)}
    assert counts["q"].running == 3 and counts["q"].throttled == 6


async def test_concurrent_leases_never_pass_the_cap(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(concurrency=4))
    await backend.enqueue([new(n=i) for i in range(40)])
    results = await asyncio.gather(*(lease(backend, t0, limit=3) for _ in range(8)))
    assert sum(len(r) for r in results) == 4


async def test_a_crashed_workers_slots_come_back_when_its_leases_expire(
    backend: Backend, t0: float
) -> None:
    await backend.set_queue("q", limits=FlowLimits(concurrency=2))
    await backend.enqueue([new(n=i) for i in range(4)])
    gone = await backend.lease(queue="q", limit=10, worker_id="dead", lease_s=5.0, now=t0)
    assert len(gone) == 2 and list(await lease(backend, t0)) == []
    await backend.reclaim_expired(now=t0 + 6.0)
    assert len(await lease(backend, t0 + 6.0)) == 2


async def test_concurrency_per_key(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(concurrency_per_key=2))
    await backend.enqueue([new(n=i, concurrency_key="a") for i in range(5)])
    await backend.enqueue([new(n=10 + i, concurrency_key="b") for i in range(5)])
    got = await lease(backend, t0)
    assert Counter(j.concurrency_key for j in got) == {"a": 2, "b": 2}
    a = next(j for j in got if j.concurrency_key == "a")
    # every way out of running gives the slot back: a retry here
    await backend.retry([Retry(a.lease, run_at=t0, error="boom", error_type="Boom")])
    more = await lease(backend, t0 + 1.0)
    assert [j.concurrency_key for j in more] == ["a"]


# -- fair leasing ------------------------------------------------------------------------------
async def test_fair_leasing_takes_keys_in_turns(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(fair=True))
    await backend.enqueue([new(n=i, fair_key="big") for i in range(200)])
    await backend.enqueue([new(n=1000 + i, fair_key="small") for i in range(3)])
    order = []
    for step in range(6):
        got = await lease(backend, t0 + step * 0.01, limit=1)
        order.append(got[0].fair_key)
    # the small tenant is not behind the big one's backlog: it gets every other start
    assert order.count("small") == 3
    assert "small" in order[:2]
    rest = await lease(backend, t0 + 1.0, limit=10)
    assert all(j.fair_key == "big" for j in rest) and len(rest) == 10


async def test_fair_leasing_in_one_batch_interleaves_keys(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(fair=True))
    await backend.enqueue([new(n=i, fair_key="a") for i in range(10)])
    await backend.enqueue([new(n=100 + i, fair_key="b") for i in range(10)])
    await backend.enqueue([new(n=200 + i) for i in range(10)])  # no key: a group of its own
    got = await lease(backend, t0, limit=6)
    assert Counter(j.fair_key for j in got) == {"a": 2, "b": 2, None: 2}
    assert [j.payload["n"] for j in got if j.fair_key == "a"] == [0, 1]  # best first within


# -- priority aging ----------------------------------------------------------------------------
async def test_priority_aging_lets_old_low_priority_work_through(
    backend: Backend, t0: float
) -> None:
    await backend.enqueue([new(n=1, priority=0)])
    await backend.enqueue([new(n=2, priority=5)])
    # without aging, priority wins
    assert [j.payload["n"] for j in await lease(backend, t0 + 100.0, limit=1)] == [2]
    await backend.enqueue([new(n=3, priority=5, delay=97.0)])  # due ~3 s before the lease
    await backend.set_queue("q", limits=FlowLimits(aging_s=10.0))
    # job 1 has been due ~100 s: 0 + 10 steps beats job 3's 5
    assert [j.payload["n"] for j in await lease(backend, t0 + 100.0, limit=1)] == [1]


# -- stored limits, counts ---------------------------------------------------------------------
async def test_limits_are_stored_kept_and_cleared(backend: Backend) -> None:
    limits = FlowLimits(rate=Rate(50, 1.0), concurrency=4, fair=True, aging_s=30.0)
    saved = await backend.set_queue("q", limits=limits)
    assert saved.limits == limits
    kept = await backend.set_queue("q", paused=True)  # other settings keep the limits
    assert kept.limits == limits and kept.paused
    [listed] = await backend.queue_settings()
    assert listed.limits == limits
    cleared = await backend.set_queue("q", limits=FlowLimits())
    assert cleared.limits == FlowLimits() and cleared.paused


async def test_a_paused_queue_with_limits_leases_nothing(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", paused=True, limits=FlowLimits(rate=Rate(5, 1.0)))
    await backend.enqueue([new()])
    assert list(await lease(backend, t0)) == []


async def test_counts_show_jobs_held_back_by_a_key(backend: Backend, t0: float) -> None:
    await backend.set_queue("q", limits=FlowLimits(rate_per_key=Rate(1, 60.0)))
    await backend.enqueue([new(n=i, rate_key="a") for i in range(4)])
    await backend.enqueue([new(n=10, rate_key="b")])
    await lease(backend, t0, limit=1)  # spends a's token (its first job is best)
    [c] = [c for c in await backend.counts(now=t0) if c.queue == "q"]
    assert c.throttled == 3 and c.queued == 4


async def test_a_tenants_throttled_count_leaves_out_its_scheduled_jobs(
    backend: Backend, t0: float
) -> None:
    await backend.set_queue("q", limits=FlowLimits(rate=Rate(1, 60.0)))
    await backend.enqueue([new(n=i, tenant="acme") for i in range(3)])
    await backend.enqueue([new(n=10 + i, tenant="acme", delay=3600.0) for i in range(2)])
    await backend.enqueue([new(n=20, tenant="globex")])
    assert len(await lease(backend, t0, limit=1)) == 1  # the queue's only token
    [acme] = await backend.counts(now=t0, tenant="acme")
    assert (acme.queued, acme.scheduled, acme.throttled) == (4, 2, 2)
    [every] = await backend.counts(now=t0)
    assert (every.queued, every.scheduled, every.throttled) == (5, 2, 3)


async def test_keys_and_tenant_are_stored_with_the_job(backend: Backend) -> None:
    [job] = await backend.enqueue(
        [new(tenant="acme", rate_key="u1", concurrency_key="host", fair_key="acme")]
    )
    stored = await backend.get_job(job.id)
    assert stored is not None
    assert (stored.tenant, stored.rate_key, stored.concurrency_key, stored.fair_key) == (
        "acme",
        "u1",
        "host",
        "acme",
    )


# -- tenants -----------------------------------------------------------------------------------
async def test_listings_narrow_to_a_tenant(backend: Backend) -> None:
    await backend.enqueue([new(n=1, tenant="acme"), new(n=2, tenant="globex"), new(n=3)])
    acme = await backend.list_jobs(JobFilter(tenant="acme"))
    assert [j.payload["n"] for j in acme] == [1]
    counts = {c.queue: c for c in await backend.counts(tenant="globex")}
    assert counts["q"].queued == 1
    run_a = await backend.start_run(NewRun.create(name="a", tenant="acme"))
    await backend.start_run(NewRun.create(name="g", tenant="globex"))
    assert [r.id for r in await backend.list_runs(tenant="acme")] == [run_a.id]
    got = await backend.get_run(run_a.id)
    assert got is not None and got.tenant == "acme"


async def test_a_tenant_quota_refuses_the_whole_call(backend: Backend, t0: float) -> None:
    await backend.enqueue([new(tenant="acme"), new(tenant="acme", queue="other")])
    with pytest.raises(TenantQuotaFull) as caught:
        await backend.enqueue(
            [new(tenant="globex"), new(tenant="acme")], tenant_max_depth={"acme": 2}
        )
    assert isinstance(caught.value, QueueFull) and caught.value.tenant == "acme"
    assert await backend.list_jobs(JobFilter(tenant="globex")) == []  # nothing stored
    # a finished job frees its place in the quota
    got = await lease(backend, t0, limit=1)
    await backend.complete([got[0].lease])
    stored = await backend.enqueue([new(tenant="acme")], tenant_max_depth={"acme": 2})
    assert stored[0].tenant == "acme"


async def test_a_key_already_stored_does_not_count_against_the_quota(
    backend: Backend,
) -> None:
    quota = {"acme": 2}
    first = await backend.enqueue(
        [new(tenant="acme", key="a1"), new(tenant="acme", key="a2")], tenant_max_depth=quota
    )
    # a producer retrying at its quota gets the jobs it stored, not a refusal
    again = await backend.enqueue([new(tenant="acme", key="a1")], tenant_max_depth=quota)
    assert again[0].id == first[0].id and not again[0].created
    with pytest.raises(TenantQuotaFull):  # a new job still is refused
        await backend.enqueue(
            [new(tenant="acme", key="a2"), new(tenant="acme", key="a3")], tenant_max_depth=quota
        )
    assert len(await backend.list_jobs(JobFilter(tenant="acme"))) == 2


async def test_a_runs_completion_job_belongs_to_the_runs_tenant(backend: Backend) -> None:
    run = await backend.start_run(NewRun.create(name="r", tenant="acme", on_complete="done"))
    await backend.enqueue([new(run=run.id, tenant="acme")])
    await backend.seal_run(run.id)
    [job] = await backend.lease(queue="q", limit=1, worker_id=WORKER, lease_s=30.0)
    await backend.complete([job.lease])
    [done] = await backend.list_jobs(JobFilter(queue="done"))
    assert done.key == f"run:{run.id}:complete" and done.tenant == "acme"
    assert [j.id for j in await backend.list_jobs(JobFilter(queue="done", tenant="acme"))] == [
        done.id
    ]


async def test_two_tenants_racing_their_quotas(backend: Backend) -> None:
    quota = {"acme": 5, "globex": 5}

    async def one(tenant: str) -> bool:
        try:
            await backend.enqueue([new(tenant=tenant)], tenant_max_depth=quota)
        except TenantQuotaFull:
            return False
        return True

    results = await asyncio.gather(*(one(t) for t in ["acme", "globex"] * 8))
    assert sum(results) == 10
    for tenant in quota:
        assert len(await backend.list_jobs(JobFilter(tenant=tenant))) == 5
