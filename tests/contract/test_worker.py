"""The worker's promise, on every backend: outcomes, retries, defers, crash loops, shutdown.

Handlers signal the test through asyncio events; the worker runs in burst mode (drains and
exits) or is stopped explicitly. Nothing here waits by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from forebay import (
    BackendUnavailable,
    Backoff,
    Defer,
    Forebay,
    Job,
    JobState,
    PermanentError,
    QueueFull,
    TransientError,
    Worker,
    WorkerSettings,
)
from forebay.backends import backend_from_url
from forebay.testing import until

NO_WAIT = Backoff(base_s=0, jitter=False)


async def test_burst_drains_every_job_once(app: Forebay) -> None:
    seen: list[int] = []

    @app.handler("docs", concurrency=4)
    async def handle(job: Job) -> None:
        seen.append(job.payload["i"])  # type: ignore[index,call-overload]

    for i in range(50):
        await app.enqueue("docs", {"i": i})
    worker = await app.run_worker(burst=True)
    assert sorted(seen) == list(range(50))
    assert worker.processed == 50
    counts = {c.queue: c for c in await app.counts()}
    assert counts["docs"].completed == 50 and counts["docs"].depth == 0


async def test_burst_also_runs_what_a_finish_enqueues_on_another_queue(app: Forebay) -> None:
    seen: list[str] = []

    @app.handler("first")
    async def first(job: Job) -> None:
        await job.enqueue("second", {})
        seen.append("first")

    @app.handler("second")
    async def second(job: Job) -> None:
        seen.append("second")

    await app.enqueue("first", {})
    await app.run_worker(burst=True)  # the lane of "second" found its queue empty at first
    assert seen == ["first", "second"]


async def test_handler_sees_its_job_and_reports_progress(app: Forebay) -> None:
    observed: dict[str, object] = {}

    @app.handler("docs")
    async def handle(job: Job) -> None:
        await job.progress(50, "parsed")
        stored = await app.get_job(job.id)
        observed.update(
            state=stored.state,
            pct=stored.progress_pct,
            msg=stored.progress_message,
            key=job.key,
            attempt=job.attempt,
            token=job.lease_token,
            queue=job.queue,
        )

    job = await app.enqueue("docs", {"url": "x"}, key="doc-1")
    await app.run_worker(burst=True)
    assert observed == {
        "state": JobState.RUNNING,
        "pct": 50.0,
        "msg": "parsed",
        "key": "doc-1",
        "attempt": 1,
        "token": observed["token"],
        "queue": "docs",
    }
    assert observed["token"]
    done = await app.get_job(job.id)
    assert done.state is JobState.COMPLETED


async def test_higher_priority_runs_first(app: Forebay) -> None:
    order: list[str] = []

    @app.handler("docs", concurrency=1)
    async def handle(job: Job) -> None:
        order.append(str(job.payload))

    for name, prio in [("low", 0), ("high", 10), ("mid", 5), ("low2", 0)]:
        await app.enqueue("docs", name, priority=prio)
    await app.run_worker(burst=True)
    assert order == ["high", "mid", "low", "low2"]


async def test_transient_errors_retry_until_max_attempts_then_dead(app: Forebay) -> None:
    attempts: list[int] = []
    exhausted: list[tuple[int, str]] = []

    async def on_exhausted(job: Job, error: BaseException) -> None:
        exhausted.append((job.id, str(error)))

    @app.handler("docs", max_attempts=3, backoff=NO_WAIT, on_exhausted=on_exhausted)
    async def handle(job: Job) -> None:
        attempts.append(job.attempt)
        raise TransientError(f"flaky #{job.attempt}")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    assert attempts == [1, 2, 3]
    dead = await app.get_job(job.id)
    assert dead.state is JobState.DEAD and dead.attempt == 3
    assert dead.error_type == "TransientError" and "flaky #3" in (dead.error or "")
    assert exhausted == [(job.id, "flaky #3")]  # exactly once


async def test_unclassified_errors_are_transient_and_succeed_on_retry(app: Forebay) -> None:
    @app.handler("docs", max_attempts=5, backoff=NO_WAIT)
    async def handle(job: Job) -> None:
        if job.attempt < 3:
            raise ValueError("not yet")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    done = await app.get_job(job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 3 and done.deliveries == 3


async def test_retry_waits_out_the_backoff_schedule(app: Forebay) -> None:
    @app.handler("docs", backoff=Backoff.fixed(5, 25))
    async def handle(job: Job) -> None:
        raise TransientError("later")

    job = await app.enqueue("docs", {})
    before = time.time()
    await app.run_worker(burst=True)  # one attempt; the retry is not due yet
    waiting = await app.get_job(job.id)
    assert waiting.state is JobState.QUEUED and waiting.attempt == 1
    assert waiting.run_at is not None
    assert before + 5 <= waiting.run_at.timestamp() <= time.time() + 5
    counts = {c.queue: c for c in await app.counts()}
    assert counts["docs"].retrying == 1 and counts["docs"].scheduled == 1


async def test_permanent_error_is_dead_at_once_and_hook_runs_once(app: Forebay) -> None:
    calls: list[int] = []
    exhausted: list[str] = []

    async def on_exhausted(job: Job, error: BaseException) -> None:
        exhausted.append(type(error).__name__)

    @app.handler("docs", max_attempts=5, on_exhausted=on_exhausted)
    async def handle(job: Job) -> None:
        calls.append(job.attempt)
        raise PermanentError("malformed document")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    dead = await app.get_job(job.id)
    assert calls == [1] and dead.state is JobState.DEAD
    assert dead.error == "PermanentError: malformed document"
    assert exhausted == ["PermanentError"]


async def test_failing_exhausted_hook_does_not_block_dead_lettering(app: Forebay) -> None:
    async def on_exhausted(job: Job, error: BaseException) -> None:
        raise RuntimeError("hook broke")

    @app.handler("docs", on_exhausted=on_exhausted)
    async def handle(job: Job) -> None:
        raise PermanentError("no")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    assert (await app.get_job(job.id)).state is JobState.DEAD


async def test_defer_does_not_spend_attempts_and_is_bounded(app: Forebay) -> None:
    runs: list[tuple[int, int]] = []

    @app.handler("docs", max_attempts=2, max_defers=3, backoff=NO_WAIT)
    async def handle(job: Job) -> None:
        runs.append((job.attempt, job.defers))
        raise Defer(timedelta(0), "downstream is busy")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    # three honoured defers at attempt 1, then defers count as errors: attempts 1 and 2
    assert runs == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 3)]
    dead = await app.get_job(job.id)
    assert dead.state is JobState.DEAD and dead.defers == 3 and dead.attempt == 2
    assert "max_defers" in (dead.error or "")


async def test_defer_puts_the_job_back_for_later(app: Forebay) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> None:
        raise Defer(timedelta(minutes=10), "rate limited")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    stored = await app.get_job(job.id)
    assert stored.state is JobState.QUEUED and stored.attempt == 0 and stored.defers == 1
    assert stored.run_at is not None and stored.run_at.timestamp() > time.time() + 500


async def test_timeout_is_a_transient_error(app: Forebay) -> None:
    never = asyncio.Event()

    @app.handler("docs", timeout_s=0.05, max_attempts=2, backoff=NO_WAIT)
    async def handle(job: Job) -> None:
        await never.wait()

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    dead = await app.get_job(job.id)
    assert dead.state is JobState.DEAD and dead.attempt == 2
    assert dead.error_type == "TimeoutError" and "timeout_s" in (dead.error or "")


async def test_crash_looping_job_is_dead_lettered_after_max_deliveries(
    app: Forebay, url: str
) -> None:
    ran: list[int] = []
    exhausted: list[str] = []

    async def on_exhausted(job: Job, error: BaseException) -> None:
        exhausted.append(str(error))

    @app.handler("docs", max_attempts=2, max_deliveries=3, on_exhausted=on_exhausted)
    async def handle(job: Job) -> None:
        ran.append(job.id)

    job = await app.enqueue("docs", {})
    # Three workers take the job and die (their leases expire without an outcome).
    crashing = backend_from_url(url)
    await crashing.open()
    try:
        for _ in range(3):
            [_leased] = await crashing.lease(queue="docs", limit=1, worker_id="doomed", lease_s=1)
            assert await crashing.reclaim_expired(now=time.time() + 3600) == 1
    finally:
        await crashing.close()
    crashed = await app.get_job(job.id)
    assert crashed.deliveries == 3 and crashed.attempt == 0  # crashes spend no attempt
    await app.run_worker(burst=True)
    dead = await app.get_job(job.id)
    assert ran == []  # the poison job never reached the handler again
    assert dead.state is JobState.DEAD and dead.error_type == "CrashLoop"
    assert len(exhausted) == 1 and "max_deliveries=3" in exhausted[0]


async def test_batch_handler_reports_per_job_outcomes(app: Forebay) -> None:
    batches: list[int] = []

    @app.handler("docs", batch_size=10, max_attempts=1)
    async def handle(jobs: list[Job]) -> dict[int, BaseException | None]:
        batches.append(len(jobs))
        return {j.id: PermanentError("odd") for j in jobs if j.payload["i"] % 2}  # type: ignore[index,operator,call-overload]

    jobs = [await app.enqueue("docs", {"i": i}) for i in range(20)]
    await app.run_worker(burst=True)
    assert sum(batches) == 20 and max(batches) <= 10
    states = {j.payload["i"]: (await app.get_job(j.id)).state for j in jobs}  # type: ignore[index,call-overload]
    assert all(states[i] is (JobState.DEAD if i % 2 else JobState.COMPLETED) for i in range(20))


async def test_batch_handler_exception_applies_to_the_whole_batch(app: Forebay) -> None:
    @app.handler("docs", batch_size=5, max_attempts=1)
    async def handle(jobs: list[Job]) -> None:
        raise PermanentError("sink rejected the batch")

    jobs = [await app.enqueue("docs", {"i": i}) for i in range(5)]
    await app.run_worker(burst=True)
    assert {(await app.get_job(j.id)).state for j in jobs} == {JobState.DEAD}


async def test_sync_handlers_run_in_a_thread(app: Forebay) -> None:
    seen: list[object] = []

    @app.handler("docs")
    def handle(job: Job) -> None:
        seen.append(job.payload)

    await app.enqueue("docs", {"sync": True})
    await app.run_worker(burst=True)
    assert seen == [{"sync": True}]


async def test_graceful_shutdown_finishes_or_releases_running_jobs(app: Forebay) -> None:
    started: dict[str, asyncio.Event] = {"quick": asyncio.Event(), "stuck": asyncio.Event()}
    proceed = asyncio.Event()
    never = asyncio.Event()

    @app.handler("docs", concurrency=2)
    async def handle(job: Job) -> None:
        name = str(job.payload)
        started[name].set()
        await (proceed if name == "quick" else never).wait()

    quick = await app.enqueue("docs", "quick")
    stuck = await app.enqueue("docs", "stuck")
    worker = app.worker(settings=WorkerSettings(shutdown_grace_s=0.5, handle_signals=False))
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
    worker.stop()
    proceed.set()  # the quick job finishes within the grace period
    await asyncio.wait_for(running, 10)
    done = await app.get_job(quick.id)
    released = await app.get_job(stuck.id)
    assert done.state is JobState.COMPLETED
    assert released.state is JobState.QUEUED
    assert released.attempt == 0 and released.deliveries == 0  # nothing spent


async def test_heartbeat_extends_the_lease_of_a_long_job(app: Forebay) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()

    @app.handler("docs", lease_s=0.6)
    async def handle(job: Job) -> None:
        started.set()
        await finish.wait()

    job = await app.enqueue("docs", {})
    worker = app.worker(settings=WorkerSettings(handle_signals=False))
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    first = (await app.get_job(job.id)).lease_expires_at
    assert first is not None

    async def extended() -> bool:
        expires = (await app.get_job(job.id)).lease_expires_at
        return expires is not None and expires > first

    await until(extended)
    finish.set()
    await until(lambda: _state_is(app, job.id, JobState.COMPLETED))
    worker.stop()
    await asyncio.wait_for(running, 10)
    assert (await app.get_job(job.id)).deliveries == 1


async def test_handler_is_cancelled_when_its_lease_is_lost(app: Forebay, url: str) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    # concurrency=1: with a free slot, this worker itself could take the reclaimed job back
    # before the "thief" below does (backends with instant wake-ups make that likely).
    @app.handler("docs", lease_s=0.3, concurrency=1)
    async def handle(job: Job) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = await app.enqueue("docs", {})
    worker = app.worker(settings=WorkerSettings(handle_signals=False, reclaim_every_s=3600))
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    other = backend_from_url(url)  # another worker decides the lease is expired
    await other.open()
    try:
        assert await other.reclaim_expired(now=time.time() + 3600) == 1
        [stolen] = await other.lease(queue="docs", limit=1, worker_id="thief", lease_s=60)
        assert stolen.id == job.id
        await asyncio.wait_for(cancelled.wait(), 10)
        worker.stop()
        await asyncio.wait_for(running, 10)
        assert await other.complete([stolen.lease]) == []  # the new holder still owns it
    finally:
        await other.close()


async def _state_is(app: Forebay, job_id: int, state: JobState) -> bool:
    return (await app.get_job(job_id)).state is state


async def test_worker_picks_up_a_job_enqueued_while_idle(app: Forebay, url: str) -> None:
    done = asyncio.Event()

    @app.handler("docs")
    async def handle(job: Job) -> None:
        done.set()

    worker = app.worker(settings=WorkerSettings(handle_signals=False, idle_poll_s=30))
    running = asyncio.create_task(worker.run())
    producer = Forebay(url)
    try:
        await producer.enqueue("docs", {"late": True})
        await asyncio.wait_for(done.wait(), 10)  # woken, not left to the 30 s poll
    finally:
        await producer.close()
        worker.stop()
        await asyncio.wait_for(running, 10)


async def test_max_depth_backpressure_through_the_app(app: Forebay) -> None:
    @app.handler("docs", max_depth=2)
    async def handle(job: Job) -> None:
        pass

    await app.enqueue("docs", 1)
    await app.enqueue("docs", 2)
    with pytest.raises(QueueFull, match=r"max_depth|full"):
        await app.enqueue("docs", 3)
    await app.run_worker(burst=True)
    await app.enqueue("docs", 3)  # room again once drained


async def test_prune_once_applies_retention(app: Forebay) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> None:
        pass

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    keeps = app.worker(settings=WorkerSettings(completed_retention=timedelta(hours=1)))
    assert await keeps.prune_once() == 0
    prunes = app.worker(settings=WorkerSettings(completed_retention=timedelta(0)))
    assert await prunes.prune_once() == 1
    with pytest.raises(LookupError):
        await app.get_job(job.id)


async def test_replay_brings_dead_jobs_back_to_life(app: Forebay) -> None:
    fixed = False

    @app.handler("docs", max_attempts=1)
    async def handle(job: Job) -> None:
        if not fixed:
            raise PermanentError("bug")

    job = await app.enqueue("docs", {})
    await app.run_worker(burst=True)
    assert (await app.get_job(job.id)).state is JobState.DEAD
    fixed = True
    assert await app.replay() == 1
    await app.run_worker(burst=True)
    assert (await app.get_job(job.id)).state is JobState.COMPLETED


def test_enqueue_sync_for_scripts(url: str) -> None:
    app = Forebay(url)
    try:
        job = app.enqueue_sync("docs", {"from": "script"}, key="s1")
        again = app.enqueue_sync("docs", {"from": "script"}, key="s1")
        assert job.created and not again.created and again.id == job.id
    finally:
        app._run_sync(app.backend.drop_everything)
        app.close_sync()


class _Unreachable:
    """The real backend, except that its first ``failures`` leases find it unreachable
    (as during a database restart)."""

    def __init__(self, inner: object, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def lease(self, **kwargs: object) -> list[Job]:
        if self.failures > 0:
            self.failures -= 1
            raise BackendUnavailable("connection refused (test)")
        return await self._inner.lease(**kwargs)  # type: ignore[attr-defined,no-any-return]


async def test_worker_rides_out_a_backend_outage(app: Forebay) -> None:
    seen: list[int] = []

    @app.handler("docs")
    async def handle(job: Job) -> None:
        seen.append(job.id)

    job = await app.enqueue("docs", {})
    flaky = _Unreachable(app.backend, failures=3)
    worker = Worker(flaky, [app.queues["docs"]], WorkerSettings(burst=True, handle_signals=False))  # type: ignore[arg-type]
    await asyncio.wait_for(worker.run(), 30)
    assert flaky.failures == 0 and seen == [job.id]
    assert (await app.get_job(job.id)).state is JobState.COMPLETED


class _DropsCancellations:
    """The real backend, except that its reclaim and wait calls drop the first cancellation
    they get while in flight, as redis-py can on Python 3.11 (``asyncio.wait_for`` there
    swallows a cancellation that lands just as the socket write finishes)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.dropped: set[str] = set()
        self.in_flight: dict[str, asyncio.Event] = {
            "reclaim_expired": asyncio.Event(),
            "wait_for_work": asyncio.Event(),
        }

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def _stuck(self, name: str) -> None:
        self.in_flight[name].set()
        try:
            await asyncio.Event().wait()  # a call that has not answered yet
        except asyncio.CancelledError:
            if name in self.dropped:
                raise
            self.dropped.add(name)

    async def reclaim_expired(self) -> int:
        await self._stuck("reclaim_expired")
        return 0

    async def wait_for_work(self, queues: object, *, timeout_s: float) -> None:
        await self._stuck("wait_for_work")


async def test_worker_stops_even_when_a_backend_call_drops_its_cancellation(
    app: Forebay,
) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> None:
        pass

    backend = _DropsCancellations(app.backend)
    worker = Worker(backend, [app.queues["docs"]], WorkerSettings(handle_signals=False))  # type: ignore[arg-type]
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in backend.in_flight.values())), 10)
    worker.stop()
    await asyncio.wait_for(running, 10)
    assert backend.dropped == {"reclaim_expired", "wait_for_work"}
