"""A job's own limits and a queue's own retention, on every backend; and a plain ``def`` handler
that overruns its timeout never runs twice at once.

Handlers signal the test through events; nothing here waits by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from forebay import Backoff, Forebay, Job, JobState, TransientError, WorkerSettings
from forebay.errors import InvalidPayload
from forebay.outcome import JobOutcome
from forebay.testing import Settled, drain, until

NO_WAIT = Backoff(base_s=0, jitter=False)


async def test_a_jobs_own_max_attempts_wins_over_its_queues(app: Forebay) -> None:
    @app.handler("docs", max_attempts=3, backoff=NO_WAIT, concurrency=4)
    async def handle(job: Job) -> None:
        raise TransientError("downstream is down")

    once = await app.enqueue("docs", {"n": 1}, max_attempts=1)
    five = await app.enqueue("docs", {"n": 2}, max_attempts=5)
    default = await app.enqueue("docs", {"n": 3})
    assert (once.max_attempts, five.max_attempts, default.max_attempts) == (1, 5, None)
    await drain(app)
    attempts = {}
    for job in (once, five, default):
        stored = await app.get_job(job.id)
        assert stored.state == JobState.DEAD
        attempts[job.id] = (stored.attempt, stored.max_attempts)
    assert attempts == {once.id: (1, 1), five.id: (5, 5), default.id: (3, None)}


async def test_a_jobs_own_timeout_wins_over_its_queues(app: Forebay) -> None:
    settled = Settled()
    app.observers.append(settled)
    never = asyncio.Event()

    @app.handler("docs", timeout_s=0.3, max_attempts=1, concurrency=4)
    async def handle(job: Job) -> None:
        if job.payload == "patient":
            # Outlives the queue's timeout: it ends only once the other job timed out.
            await settled.until(JobOutcome.DEAD, 2)
            return
        await never.wait()

    patient = await app.enqueue("docs", "patient", timeout_s=60)
    hasty = await app.enqueue("docs", "hasty", timeout_s=0.05)
    default = await app.enqueue("docs", "default")
    await drain(app)
    assert (await app.get_job(patient.id)).state == JobState.COMPLETED
    for job, limit in ((hasty, "0.05"), (default, "0.3")):
        stored = await app.get_job(job.id)
        assert stored.state == JobState.DEAD
        assert stored.error == f"TimeoutError: handler ran longer than timeout_s={limit}"
    assert (await app.get_job(patient.id)).timeout_s == 60.0


async def test_limits_are_kept_by_a_batch_enqueue_and_checked(app: Forebay) -> None:
    from forebay.job import NewJob

    jobs = await app.enqueue_many(
        [
            NewJob.create("docs", {"i": 0}),
            NewJob.create("docs", {"i": 1}, max_attempts=2),
            NewJob.create("docs", {"i": 2}, timeout_s=1.5),
            NewJob.create("docs", {"i": 3}, key="k", max_attempts=7, timeout_s=9),
        ]
    )
    stored = [await app.get_job(j.id) for j in jobs]
    assert [(j.max_attempts, j.timeout_s) for j in stored] == [
        (None, None),
        (2, None),
        (None, 1.5),
        (7, 9.0),
    ]
    (again,) = await app.enqueue_many([NewJob.create("docs", {}, key="k", max_attempts=1)])
    assert not again.created and again.max_attempts == 7  # the first job, as stored
    for bad in (
        {"max_attempts": 0},
        {"max_attempts": 1001},
        {"max_attempts": True},
        {"max_attempts": 2.0},
        {"timeout_s": 0},
        {"timeout_s": -1},
        {"timeout_s": float("inf")},
        {"timeout_s": float("nan")},
        {"timeout_s": 8 * 86400},
        {"timeout_s": "5"},
    ):
        with pytest.raises(InvalidPayload, match=next(iter(bad))):
            await app.enqueue("docs", {}, **bad)  # type: ignore[arg-type]
    assert len(await app.list_jobs()) == 4  # nothing stored by a refused enqueue


async def _finish_one_of_each(app: Forebay, queue: str) -> dict[str, int]:
    """Enqueue three jobs on ``queue`` and finish them completed, dead and cancelled."""
    done = await app.enqueue(queue, "ok")
    dead = await app.enqueue(queue, "fail")
    cancelled = await app.enqueue(queue, "later", delay=3600)
    assert await app.cancel(cancelled.id) == [cancelled.id]
    await drain(app, [queue])
    assert (await app.get_job(done.id)).state == JobState.COMPLETED
    assert (await app.get_job(dead.id)).state == JobState.DEAD
    return {"completed": done.id, "dead": dead.id, "cancelled": cancelled.id}


async def _kept(app: Forebay, ids: dict[str, int]) -> set[str]:
    kept = set()
    for state, job_id in ids.items():
        if await app.backend.get_job(job_id) is not None:
            kept.add(state)
    return kept


async def test_each_queue_is_pruned_by_its_own_retention(app: Forebay) -> None:
    async def handle(job: Job) -> None:
        if job.payload == "fail":
            raise TransientError("no")

    zero, hour = timedelta(0), timedelta(hours=1)
    app.handler("plain", max_attempts=1)(handle)
    app.handler("brief", max_attempts=1, completed_retention=zero, cancelled_retention=zero)(handle)
    app.handler("kept", max_attempts=1, completed_retention=hour, dead_retention=hour)(handle)
    await app.open()
    ids = {q: await _finish_one_of_each(app, q) for q in ("plain", "brief", "kept")}

    # The worker keeps everything for an hour: only brief's own zero retention prunes.
    worker = app.worker(settings=WorkerSettings(handle_signals=False))
    assert await worker.prune_once() == 2
    assert await _kept(app, ids["plain"]) == {"completed", "dead", "cancelled"}
    assert await _kept(app, ids["brief"]) == {"dead"}
    assert await _kept(app, ids["kept"]) == {"completed", "dead", "cancelled"}

    # The worker keeps nothing: kept's own hour still holds for its completed and dead jobs.
    gone = WorkerSettings(completed_retention=zero, dead_retention=zero, cancelled_retention=zero)
    assert await app.worker(settings=gone).prune_once() == 5
    assert await _kept(app, ids["plain"]) == set()
    assert await _kept(app, ids["brief"]) == set()
    assert await _kept(app, ids["kept"]) == {"completed", "dead"}
    counts = {c.queue: c for c in await app.counts()}
    assert (counts["kept"].completed, counts["kept"].dead, counts["kept"].cancelled) == (1, 1, 0)


async def test_a_replayed_job_is_not_pruned_by_its_old_death(app: Forebay) -> None:
    fixed = threading.Event()

    @app.handler("docs", max_attempts=1, dead_retention=timedelta(0))
    async def handle(job: Job) -> None:
        if not fixed.is_set():
            raise TransientError("not yet")

    job = await app.enqueue("docs", {})
    await drain(app)
    assert await app.replay() == 1
    assert await app.worker().prune_once() == 0  # queued again: not a dead job to prune
    fixed.set()
    await drain(app)
    assert (await app.get_job(job.id)).state == JobState.COMPLETED


def test_a_queue_refuses_a_negative_retention() -> None:
    from forebay.errors import ConfigError

    app = Forebay("sqlite:///unused.db")
    with pytest.raises(ConfigError, match="dead_retention"):
        app.handler("docs", dead_retention=timedelta(seconds=-1))(lambda job: None)


class _Overruns(logging.Handler):
    """Counts the worker's "ran longer than timeout_s" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "ran longer than timeout_s" in record.getMessage():
            self.count += 1


@pytest.fixture
def overruns() -> Iterator[_Overruns]:
    handler = _Overruns()
    logger = logging.getLogger("forebay.worker")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_a_def_handler_past_its_timeout_never_runs_twice_at_once(
    app: Forebay, overruns: _Overruns
) -> None:
    settled = Settled()
    app.observers.append(settled)
    release = threading.Event()
    lock = threading.Lock()
    runs: list[tuple[str, int, int, float]] = []  # (start|end, job id, attempt, time)
    running: dict[int, int] = {}
    most_at_once = 0

    @app.handler("docs", timeout_s=0.2, lease_s=0.6, max_attempts=2, backoff=NO_WAIT, concurrency=2)
    def handle(job: Job) -> None:
        nonlocal most_at_once
        with lock:
            runs.append(("start", job.id, job.attempt, time.monotonic()))
            running[job.id] = running.get(job.id, 0) + 1
            most_at_once = max(most_at_once, sum(running.values()))
        try:
            if job.payload != "quick" and job.attempt == 1:
                assert release.wait(30), "the test never released the handler"
        finally:
            with lock:
                running[job.id] -= 1
                runs.append(("end", job.id, job.attempt, time.monotonic()))

    slow = [await app.enqueue("docs", f"slow-{i}") for i in range(2)]
    quick = await app.enqueue("docs", "quick", priority=-1)
    worker = asyncio.create_task(drain(app))
    try:
        await _check_overrun(app, slow, runs, overruns, settled)
    finally:
        release.set()
    await worker
    for job in slow:
        mine = [(kind, attempt, at) for kind, job_id, attempt, at in runs if job_id == job.id]
        assert [(kind, attempt) for kind, attempt, _ in mine] == [
            ("start", 1),
            ("end", 1),
            ("start", 2),
            ("end", 2),
        ]
        assert mine[2][2] >= mine[1][2]  # the retry started after the first run returned
        stored = await app.get_job(job.id)
        assert stored.state == JobState.COMPLETED and stored.attempt == 2
        assert [o for j, o in settled.outcomes if j == job.id] == [
            JobOutcome.RETRIED,
            JobOutcome.COMPLETED,
        ]
    assert (await app.get_job(quick.id)).state == JobState.COMPLETED
    assert most_at_once <= 2


async def _check_overrun(
    app: Forebay,
    slow: list[Job],
    runs: list[tuple[str, int, int, float]],
    overruns: _Overruns,
    settled: Settled,
) -> None:
    """While both slow jobs overran their timeout in threads that have not returned."""
    await until(
        lambda: overruns.count == 2 or any(attempt > 1 for _, _, attempt, _ in runs),
        what="both handlers to overrun their timeout",
    )
    assert [r for r in runs if r[2] > 1] == []  # no retry while a first run goes on
    first_leases = {j.id: (await app.get_job(j.id)).lease_expires_at for j in slow}
    for job in slow:
        stored = await app.get_job(job.id)
        assert stored.state == JobState.RUNNING and stored.attempt == 1  # lease kept
    # Both slots stay taken: the quick job waits, the retries wait.
    assert sorted((job_id, attempt) for kind, job_id, attempt, _ in runs) == sorted(
        (j.id, 1) for j in slow
    )  # two first runs started, none ended, no retry and no quick job started

    async def renewed() -> bool:
        leases = [(await app.get_job(j.id)).lease_expires_at for j in slow]
        return all(
            new is not None and old is not None and new > old
            for new, old in zip(leases, first_leases.values(), strict=True)
        )

    await until(renewed, what="the heartbeat to renew the overrunning jobs' leases")
    assert settled.outcomes == []  # nothing settled while the threads run


async def test_a_def_handler_past_its_last_timeout_dies_as_a_timeout(
    app: Forebay, overruns: _Overruns
) -> None:
    settled = Settled()
    app.observers.append(settled)
    release = threading.Event()

    @app.handler("docs", timeout_s=0.1, max_attempts=1, concurrency=2)
    def handle(job: Job) -> None:
        assert release.wait(30), "the test never released the handler"

    jobs = [await app.enqueue("docs", i) for i in range(2)]
    worker = asyncio.create_task(drain(app))
    try:
        await until(
            lambda: overruns.count == 2 or settled.count(JobOutcome.DEAD) > 0,
            what="both handlers to overrun their timeout",
        )
        # Still running, leased: not dead while the threads go on.
        assert settled.outcomes == []
        assert {(await app.get_job(j.id)).state for j in jobs} == {JobState.RUNNING}
    finally:
        release.set()
    await worker
    for job in jobs:
        stored = await app.get_job(job.id)
        assert stored.state == JobState.DEAD
        assert stored.error == "TimeoutError: handler ran longer than timeout_s=0.1"
