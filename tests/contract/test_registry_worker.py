"""Workers registering in the store, on every backend (:mod:`forebay.worker.registry`): two
workers of one app on different queues are listed with their queues and concurrency, their
counts follow the outcomes they recorded, a stopping one says so, a clean stop removes the
record and a worker that stops saving drops out after its ttl. An intake-only service's
``/readyz`` tells whether a live worker consumes each queue.

Expiry is checked with ``list_workers(now=...)``, never slept through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import forebay
from forebay import Backoff, Forebay, Job, PermanentError, WorkerSettings
from forebay.errors import BackendError, ConfigError
from forebay.fleet import WorkerInfo, minute_of
from forebay.http import ServiceSettings
from forebay.testing import Settled, until
from forebay.worker.maintenance import prune_once
from forebay.worker.registry import ttl_for
from tests.contract.workers import running
from tests.integration.test_http import serving

FAST = WorkerSettings(
    handle_signals=False, idle_poll_s=0.2, shutdown_grace_s=10, registry_every_s=0.05
)


async def listed(app: Forebay) -> dict[str, WorkerInfo]:
    return {w.id: w for w in await app.list_workers()}


async def test_two_workers_on_different_queues_are_listed_until_they_stop(app: Forebay) -> None:
    @app.handler("docs", concurrency=3)
    async def docs(job: Job) -> None:
        pass

    @app.handler("pages", concurrency=2)
    async def pages(job: Job) -> None:
        pass

    one, two = app.worker(["docs"], FAST), app.worker(["pages"], FAST)
    async with running(one), running(two):
        await until(lambda: _has(app, {one.worker_id, two.worker_id}), what="both workers listed")
        found = await listed(app)
        first, second = found[one.worker_id], found[two.worker_id]
        assert (first.queues, first.concurrency) == (("docs",), 3)
        assert (second.queues, second.concurrency) == (("pages",), 2)
        for w in (first, second):
            assert (w.host, w.pid) == (socket.gethostname(), os.getpid())
            assert w.version == forebay.__version__
            assert w.ttl_s == 15.0  # three beats of 0.05 s are less than the floor
            assert not w.stopping and w.running == 0
        listing = await app.list_workers()
        assert [w.started_at for w in listing] == sorted(w.started_at for w in listing)
    # A clean stop removes the record at once, not after its ttl.
    assert await app.list_workers() == []


async def _has(app: Forebay, ids: set[str]) -> bool:
    return ids <= set(await listed(app))


async def test_counts_follow_the_outcomes_and_a_burst_worker_leaves_no_record(
    app: Forebay,
) -> None:
    tries: dict[int, int] = {}
    release = asyncio.Event()
    seen_by_handler: list[str] = []

    @app.handler("docs", max_attempts=3, backoff=Backoff(base_s=0, jitter=False))
    async def docs(job: Job) -> None:
        tries[job.id] = tries.get(job.id, 0) + 1
        if job.payload == "dead":
            raise PermanentError("no good")
        if job.payload == "flaky" and tries[job.id] == 1:
            raise RuntimeError("once")
        if job.payload == "slow":
            await release.wait()
        if job.payload == "look":
            seen_by_handler.extend(w.id for w in await app.list_workers())

    settled = Settled()
    app.observers.append(settled)
    for payload in ("ok", "ok", "dead", "flaky"):
        await app.enqueue("docs", payload)
    worker = app.worker(["docs"], FAST)
    async with running(worker):
        # completed: ok, ok, flaky (second try); failed: dead, flaky's first try
        await until(
            lambda: _counts(app, worker.worker_id, (3, 2, 0)), what="counts 3 completed, 2 failed"
        )
        slow = await app.enqueue("docs", "slow")
        await until(lambda: _counts(app, worker.worker_id, (3, 2, 1)), what="one job running")
        release.set()
        assert await settled.outcome_of(slow.id) == "completed"
        await until(lambda: _counts(app, worker.worker_id, (4, 2, 0)), what="4 completed")

    # A burst worker registers, works and removes its record when the queue is drained.
    await app.enqueue("docs", "look")
    done = await app.run_worker(["docs"], burst=True, settings=FAST)
    assert seen_by_handler == [done.worker_id]
    assert done.processed == 1 and done.registry.completed == 1
    assert await app.list_workers() == []


async def _counts(app: Forebay, worker_id: str, expected: tuple[int, int, int]) -> bool:
    found = (await listed(app)).get(worker_id)
    return found is not None and (found.completed, found.failed, found.running) == expected


async def test_a_stopping_worker_says_so_until_its_running_job_ends(app: Forebay) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @app.handler("docs")
    async def docs(job: Job) -> None:
        started.set()
        await release.wait()

    await app.enqueue("docs", 1)
    one, two = app.worker(["docs"], FAST), app.worker(["docs"], FAST)
    task = asyncio.create_task(one.run())
    await started.wait()  # ``one`` runs the job
    async with running(two):
        await until(lambda: _has(app, {two.worker_id}), what="the second worker listed")
        one.stop()  # its running job holds the shutdown within the grace
        await until(lambda: _stopping(app, one.worker_id), what="the stopping flag saved")
        still = await listed(app)
        assert still[one.worker_id].running == 1
        assert not still[two.worker_id].stopping
        release.set()
        await asyncio.wait_for(task, 30)
        assert list(await listed(app)) == [two.worker_id]


async def _stopping(app: Forebay, worker_id: str) -> bool:
    found = (await listed(app)).get(worker_id)
    return found is not None and found.stopping


async def test_a_record_holds_for_its_ttl_past_the_last_save_and_no_longer(
    app: Forebay,
) -> None:
    @app.handler("docs")
    async def docs(job: Job) -> None:
        pass

    beating = app.worker(["docs"], FAST)  # ttl 15 s (the floor)
    slow = app.worker(["docs"], WorkerSettings(handle_signals=False, registry_every_s=10))
    store = await app.open()
    async with running(beating), running(slow):
        await until(lambda: _has(app, {beating.worker_id, slow.worker_id}), what="both listed")
        # Killed now, neither would save again nor remove its record: the store lists each
        # until its ttl has passed since its last save, however it ended.
        found = await listed(app)
        assert found[slow.worker_id].ttl_s == 30.0  # three beats of 10 s
        for worker_id, ttl_s in ((beating.worker_id, 15.0), (slow.worker_id, 30.0)):
            seen = found[worker_id].last_seen.timestamp()
            assert worker_id in {w.id for w in await store.list_workers(now=seen + ttl_s - 1)}
        # Past every ttl (counted from now: no save has a later time), nobody is listed.
        assert await store.list_workers(now=time.time() + 31) == []


async def test_a_failing_save_is_logged_and_tried_again_on_the_next_beat(
    app: Forebay, caplog: pytest.LogCaptureFixture
) -> None:
    @app.handler("docs")
    async def docs(job: Job) -> None:
        pass

    store = await app.open()
    save = store.save_worker
    failures = 0

    async def failing(worker: WorkerInfo) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise BackendError("the store is away")
        await save(worker)

    store.save_worker = failing  # type: ignore[method-assign]
    worker = app.worker(["docs"], FAST)
    with caplog.at_level(logging.WARNING, logger="forebay.worker"):
        async with running(worker):
            await until(lambda: _has(app, {worker.worker_id}), what="listed after two failures")
            job = await app.enqueue("docs", 1)
            await until(lambda: _counts(app, worker.worker_id, (1, 0, 0)), what="it works on")
    assert failures == 2 and (await app.get_job(job.id)).state == "completed"
    warnings = [r for r in caplog.records if "the store is away" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)


async def test_maintenance_prunes_throughput_minutes_older_than_a_day(app: Forebay) -> None:
    @app.handler("docs")
    async def docs(job: Job) -> None:
        pass

    store = await app.open()
    old = time.time() - 2 * 24 * 3600  # a lease, and its reclaim, two days ago
    await app.enqueue("docs", 1, run_at=datetime.fromtimestamp(old - 60, UTC))
    await store.lease(queue="docs", limit=1, worker_id="dying", lease_s=1.0, now=old)
    assert await store.reclaim_expired(now=old + 10) == 1
    await app.run_worker(["docs"], burst=True, settings=FAST)  # and completed now
    assert len(await store.throughput(since=old - 60)) == 2

    await prune_once(store, FAST)
    [row] = await store.throughput(since=old - 60)
    assert (row.completed, row.reclaimed) == (1, 0)
    assert row.minute.timestamp() >= minute_of(time.time() - 120)
    [total] = await store.totals()
    assert (total.completed, total.reclaimed) == (1, 1)


# -- /readyz of an intake-only node ------------------------------------------------------------
async def test_readyz_of_an_intake_only_node_says_which_queues_a_live_worker_consumes(
    app: Forebay,
) -> None:
    @app.handler("docs")
    async def docs(job: Job) -> None:
        pass

    @app.handler("pages")
    async def pages(job: Job) -> None:
        pass

    async with serving(app, ServiceSettings(workers=False)) as client:
        for queue in ("docs", "pages"):
            posted = await client.post(f"/v1/queues/{queue}/jobs", json={"payload": 1})
            assert posted.status_code == 201
        body = await _ready(client)
        assert body["ready"] is True and body["workers"] is None  # it runs no worker itself
        assert body["fleet"] == {"workers": 0}
        assert _consumers(body) == {"docs": 0, "pages": 0}
        assert body["unconsumed"] == ["docs", "pages"]

        worker = app.worker(["docs"], FAST)
        async with running(worker):
            await until(lambda: _ready_says(client, unconsumed=["pages"]), what="docs consumed")
            body = await _ready(client)
            assert body["fleet"] == {"workers": 1}
            assert _consumers(body) == {"docs": 1, "pages": 0}
        body = await _ready(client)  # a clean stop removes it at once
        assert body["unconsumed"] == ["docs", "pages"] and body["fleet"] == {"workers": 0}


async def _ready(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _ready_says(client: httpx.AsyncClient, *, unconsumed: list[str]) -> bool:
    return bool((await _ready(client))["unconsumed"] == unconsumed)


def _consumers(body: dict[str, Any]) -> dict[str, int]:
    return {q["queue"]: q["consumers"] for q in body["queues"]}


def test_the_beat_comes_from_the_environment_and_sets_the_ttl() -> None:
    settings = WorkerSettings.from_env({"FOREBAY_REGISTRY_EVERY_S": "8"})
    assert settings.registry_every_s == 8.0
    assert (ttl_for(settings.registry_every_s), ttl_for(1.0)) == (24.0, 15.0)
    with pytest.raises(ConfigError, match="registry_every_s"):
        WorkerSettings.from_env({"FOREBAY_REGISTRY_EVERY_S": "0"})
