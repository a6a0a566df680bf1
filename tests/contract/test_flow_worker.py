"""Flow control from the app and real workers, on every backend: keys worked out at enqueue,
tenant quotas, the limits a worker stores when it starts, and the limits holding across two
workers — a cap never exceeded, a rate used to the full and never passed, a small tenant served
while a big one drains (docs/flow-control.md).

The workers run in this process (two apps on one store stand for two hosts); the tests wait on
the jobs' outcomes, never on time. A handler that must overlap with another waits for an event.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest

from forebay import (
    FlowLimits,
    Forebay,
    InvalidPayload,
    Job,
    JobFilter,
    NewJob,
    Rate,
    TenantQuotaFull,
    WorkerSettings,
)
from forebay.flow import NO_LIMITS
from forebay.testing import drain
from tests.contract.workers import running

FAST = WorkerSettings(handle_signals=False, idle_poll_s=0.05, shutdown_grace_s=5)


async def wait_all(app: Forebay, jobs: list[Job]) -> list[Job]:
    return [await app.wait(job.id, timeout_s=60) for job in jobs]


# -- keys worked out at enqueue ---------------------------------------------------------------------
async def test_the_app_works_out_the_declared_keys_and_a_given_key_wins(app: Forebay) -> None:
    @app.handler(
        "fetch",
        rate_limit_key="payload.host",
        rate_limit_per_key="100/s",
        concurrency_key=lambda job: f"{job.tenant}/{job.payload['host']}",
        concurrency_per_key=2,
        fair_key="tenant",
    )
    async def fetch(job: Job) -> None: ...

    worked = await app.enqueue("fetch", {"host": "a.org"}, tenant="acme")
    given = await app.enqueue("fetch", {"host": "a.org"}, tenant="acme", fair_key="vip")
    batch = await app.enqueue_many(
        [
            NewJob.create("fetch", {"host": "b.org"}, tenant="globex"),
            NewJob.create("fetch", {"host": 7}, rate_key="own"),
        ]
    )
    stored = [await app.get_job(j.id) for j in (worked, given, *batch)]
    keys = [(j.tenant, j.rate_key, j.concurrency_key, j.fair_key) for j in stored]
    assert keys == [
        ("acme", "a.org", "acme/a.org", "acme"),
        ("acme", "a.org", "acme/a.org", "vip"),
        ("globex", "b.org", "globex/b.org", "globex"),
        (None, "own", "None/7", None),
    ]
    with pytest.raises(InvalidPayload, match="job 1 of 2: rate_key must be a non-empty string"):
        await app.enqueue_many(
            [
                NewJob.create("fetch", {"host": "c.org"}),
                NewJob.create("fetch", {"host": {"nested": 1}}),
            ]
        )
    assert len(await app.list_jobs(JobFilter(queue="fetch"))) == 4  # the batch stored nothing


async def test_a_producer_without_the_handler_code_stores_the_same_keys(
    url: str, app: Forebay
) -> None:
    producer = Forebay(url)  # another process: declares the queue's keys, not its handler
    producer.queue("fetch", fair_key="payload.tenant", rate_limit_key="payload.host")
    try:
        job = await producer.enqueue("fetch", {"tenant": "acme", "host": "a.org"})
        plain = await producer.enqueue("other", {"tenant": "acme"})  # undeclared: no keys
    finally:
        await producer.close()
    stored, other = await app.get_job(job.id), await app.get_job(plain.id)
    assert (stored.fair_key, stored.rate_key) == ("acme", "a.org")
    assert (other.fair_key, other.rate_key) == (None, None)


async def test_a_child_job_inherits_its_parents_tenant_and_gets_its_queues_keys(
    app: Forebay,
) -> None:
    children: list[Job] = []

    @app.handler("parent")
    async def parent(job: Job) -> None:
        children.append(await job.enqueue("child", {"n": 1}))
        children.append(await job.enqueue("child", {"n": 2}, tenant="globex"))

    @app.handler("child", fair_key="tenant")
    async def child(job: Job) -> None: ...

    await app.enqueue("parent", {}, tenant="acme")
    await drain(app)
    stored = [await app.get_job(c.id) for c in children]
    assert [(c.tenant, c.fair_key) for c in stored] == [("acme", "acme"), ("globex", "globex")]


# -- tenants ----------------------------------------------------------------------------------------
async def test_a_tenant_over_its_quota_is_refused_and_others_go_on(url: str) -> None:
    app = Forebay(url, tenant_quotas={"acme": 3, "*": 1})
    try:
        await app.enqueue("a", {}, tenant="acme")
        await app.enqueue_many([NewJob.create("b", {}, tenant="acme") for _ in range(2)])
        with pytest.raises(TenantQuotaFull) as caught:
            await app.enqueue("a", {}, tenant="acme")  # its quota counts every queue
        assert (caught.value.tenant, caught.value.max_depth) == ("acme", 3)
        await app.enqueue("a", {}, tenant="globex")  # "*": every other tenant, each its own
        await app.enqueue("a", {}, tenant="initech")
        with pytest.raises(TenantQuotaFull) as other:
            await app.enqueue_many(
                [NewJob.create("a", {}, tenant="initech"), NewJob.create("a", {})]
            )
        assert (other.value.tenant, other.value.max_depth) == ("initech", 1)
        for _ in range(5):
            await app.enqueue("a", {})  # no tenant: no quota
        assert sum(c.depth for c in await app.counts(tenant="acme")) == 3
        assert sum(c.depth for c in await app.counts(tenant="initech")) == 1
        assert sum(c.depth for c in await app.counts()) == 3 + 1 + 1 + 5
    finally:
        await app.backend.drop_everything()
        await app.close()


async def test_runs_belong_to_a_tenant(app: Forebay) -> None:
    mine = await app.start_run(name="import", tenant="acme")
    theirs = await app.start_run(name="import", tenant="globex")
    assert (await app.get_run(mine.id)).tenant == "acme"
    assert [r.id for r in await app.list_runs(tenant="acme")] == [mine.id]
    assert {r.id for r in await app.list_runs()} == {mine.id, theirs.id}


# -- the limits a worker stores ---------------------------------------------------------------------
async def test_a_worker_stores_its_queues_limits_when_it_starts(url: str, app: Forebay) -> None:
    @app.handler("fetch", rate_limit="20/s", global_concurrency=3, fair_key="tenant")
    async def fetch(job: Job) -> None: ...

    await drain(app)
    stored = await app.queue_settings()
    assert stored["fetch"].limits == FlowLimits(rate=Rate(20, 1.0), concurrency=3, fair=True)

    lifted = Forebay(url)  # the next deploy: the limits removed from the code

    @lifted.handler("fetch")
    async def fetch_again(job: Job) -> None: ...

    try:
        await drain(lifted)
        assert (await lifted.queue_settings())["fetch"].limits == NO_LIMITS
    finally:
        await lifted.close()


# -- caps across two workers ------------------------------------------------------------------------
class Overlap:
    """Counts the calls running at once (per key too); the first calls wait until ``cap`` run
    together, so the test sees the cap reached, not only never passed."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.now: Counter[str | None] = Counter()
        self.most: Counter[str | None] = Counter()
        self.total = 0
        self.most_total = 0
        self.full = asyncio.Event()

    async def __call__(self, key: str | None = None) -> None:
        self.now[key] += 1
        self.total += 1
        self.most[key] = max(self.most[key], self.now[key])
        self.most_total = max(self.most_total, self.total)
        if self.total >= self.cap:
            self.full.set()
        try:
            await asyncio.wait_for(self.full.wait(), 10)
            await asyncio.sleep(0)  # let the other workers try to lease meanwhile
        finally:
            self.now[key] -= 1
            self.total -= 1


async def test_two_workers_never_run_more_than_the_queue_cap(url: str, app: Forebay) -> None:
    overlap = Overlap(cap=3)
    other = Forebay(url)
    for each in (app, other):

        @each.handler("capped", concurrency=5, global_concurrency=3)
        async def capped(job: Job) -> None:
            await overlap()

    try:
        jobs = [await app.enqueue("capped", {"n": i}) for i in range(24)]
        async with running(app.worker(settings=FAST)), running(other.worker(settings=FAST)):
            done = await wait_all(app, jobs)
    finally:
        await other.close()
    assert all(j.state == "completed" for j in done)
    assert overlap.most_total == 3  # reached, never passed, with 10 slots in the two workers


async def test_two_workers_never_run_more_than_the_cap_per_key(url: str, app: Forebay) -> None:
    overlap = Overlap(cap=4)  # two keys, two each
    other = Forebay(url)
    for each in (app, other):

        @each.handler(
            "per-key", concurrency=6, concurrency_key="payload.tenant", concurrency_per_key=2
        )
        async def per_key(job: Job) -> None:
            await overlap(job.payload["tenant"])

    try:
        jobs = [
            await app.enqueue("per-key", {"tenant": tenant})
            for _ in range(10)
            for tenant in ("acme", "globex")
        ]
        async with running(app.worker(settings=FAST)), running(other.worker(settings=FAST)):
            done = await wait_all(app, jobs)
    finally:
        await other.close()
    assert all(j.state == "completed" for j in done)
    assert overlap.most == {"acme": 2, "globex": 2}


# -- a rate, used to the full -----------------------------------------------------------------------
@pytest.mark.parametrize("burst", [True, False], ids=["burst", "running"])
async def test_a_worker_starts_a_rate_limited_backlog_at_the_rate(
    app: Forebay, burst: bool
) -> None:
    # A burst of 3 lets a lease that came late (a worker descheduled on a busy machine) take
    # the tokens it missed, as it would in production; the bounds below count the burst.
    rate, size = 20.0, 3
    started: list[float] = []

    @app.handler("paced", rate_limit=Rate(20, 1.0, burst=size), concurrency=8)
    async def paced(job: Job) -> None:
        assert job.started_at is not None
        started.append(job.started_at.timestamp())  # the lease's time, by the store's clock

    jobs = [await app.enqueue("paced", {"n": i}) for i in range(40)]
    if burst:  # a burst worker waits for the rate's tokens: it drains, it does not quit
        await drain(app)
    else:  # a worker waits for the next token, not for its idle poll (1 s)
        async with running(app.worker(settings=WorkerSettings(handle_signals=False))):
            await wait_all(app, jobs)
    assert [(await app.get_job(j.id)).state for j in jobs] == ["completed"] * 40
    started.sort()
    span = started[-1] - started[0]
    assert len(started) <= rate * span + size + 1e-6  # never past the rate and one burst
    for i, first in enumerate(started):  # nor in any part of the run
        window = [t for t in started[i:] if t <= first + 0.5]
        assert len(window) <= rate * 0.5 + size + 1e-6
    gaps_ms = [round(1000 * (b - a)) for a, b in itertools.pairwise(started)]
    # with a backlog, at least 90 % of it is used
    assert len(started) >= 0.9 * rate * span, f"gaps between starts (ms): {gaps_ms}"


# -- fair leasing -----------------------------------------------------------------------------------
async def test_a_small_tenant_starts_early_while_a_big_one_drains(app: Forebay) -> None:
    order: list[str] = []

    @app.handler("ingest", concurrency=2, fair_key="payload.tenant")
    async def ingest(job: Job) -> None:
        order.append(job.payload["tenant"])

    await app.enqueue_many([NewJob.create("ingest", {"tenant": "big"}) for _ in range(200)])
    await app.enqueue_many([NewJob.create("ingest", {"tenant": "small"}) for _ in range(5)])
    await drain(app)
    assert Counter(order) == {"big": 200, "small": 5}
    small = [i for i, tenant in enumerate(order) if tenant == "small"]
    assert max(small) < 20  # taking turns: among the first, not after the 200
