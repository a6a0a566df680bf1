"""The schedule contract (DESIGN §10), on every backend: schedules are stored by name, and a
firing is one atomic compare-and-set of the last tick with the enqueue of the tick's jobs."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from forebay import Forebay, JobFilter, NewJob, QueueFull, Schedule
from forebay.backends import Backend, backend_from_url
from forebay.backends.base import PruneSpec
from forebay.schedules import Firing, due, firing, tick_key
from forebay.worker.scheduler import Scheduler

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def every(name: str = "poll", seconds: float = 1, **kw: object) -> Schedule:
    return Schedule.create("q", every=timedelta(seconds=seconds), name=name, **kw)  # type: ignore[arg-type]


async def stored(backend: Backend, name: str) -> Schedule:
    [found] = [s for s in await backend.list_schedules() if s.name == name]
    return found


async def arm(backend: Backend, schedule: Schedule, at: datetime = T0) -> Schedule:
    step = firing(schedule, due(schedule, at))
    assert step is not None and not step.jobs
    assert await backend.fire_schedule(step)
    return await stored(backend, schedule.name)


async def test_schedules_are_stored_by_name_and_keep_their_last_tick(backend: Backend) -> None:
    cron = Schedule.create(
        "reports", cron="0 3 * * *", tz="Europe/Berlin", payload={"kind": "nightly"}, priority=5
    )
    await backend.save_schedules([every("poll", 30, payload=[1, 2]), cron])
    listed = await backend.list_schedules()
    assert [s.name for s in listed] == ["poll", "reports"]
    assert listed[0] == every("poll", 30, payload=[1, 2])
    assert listed[1] == cron and listed[1].payload == {"kind": "nightly"}
    assert all(s.last_tick is None for s in listed)

    armed = await arm(backend, listed[0])
    assert armed.last_tick == T0
    await backend.save_schedules([every("poll", 60, catch_up=3)])  # a new definition
    again = await stored(backend, "poll")
    assert again.every == timedelta(seconds=60) and again.catch_up == 3
    assert again.last_tick == T0  # kept

    assert await backend.delete_schedules(["poll", "nope", "poll"]) == ["poll"]
    assert [s.name for s in await backend.list_schedules()] == ["reports"]
    assert await backend.delete_schedules([]) == []


async def test_a_firing_advances_the_last_tick_and_enqueues_its_jobs(backend: Backend) -> None:
    await backend.save_schedules([every(payload={"p": 1})])
    schedule = await arm(backend, await stored(backend, "poll"))
    step = firing(schedule, due(schedule, T0 + timedelta(seconds=1.5)))
    assert step is not None and len(step.jobs) == 1
    assert await backend.fire_schedule(step)
    after = await stored(backend, "poll")
    assert after.last_tick == T0 + timedelta(seconds=1)
    [job] = await backend.list_jobs(JobFilter(queue="q"))
    assert job.key == "schedule:poll:2026-12-07T12:00:01Z" == tick_key("poll", after.last_tick)
    assert job.payload == {"p": 1}
    # the same step again: refused, nothing more stored
    assert not await backend.fire_schedule(step)
    assert len(await backend.list_jobs(JobFilter(queue="q"))) == 1


async def test_a_tick_is_never_refused_by_a_stored_max_depth(backend: Backend) -> None:
    """A queue at its stored max_depth refuses producers, not the schedule's ticks: the tick
    moved forward, so a refused tick would be lost."""
    await backend.set_queue("q", max_depth=1)
    await backend.enqueue([NewJob.create("q", {"filler": True})])
    with pytest.raises(QueueFull):
        await backend.enqueue([NewJob.create("q", {"one": "too many"})])
    await backend.save_schedules([every()])
    schedule = await arm(backend, await stored(backend, "poll"))
    step = firing(schedule, due(schedule, T0 + timedelta(seconds=1.5)))
    assert step is not None and await backend.fire_schedule(step)
    keys = [j.key for j in await backend.list_jobs(JobFilter(queue="q"))]
    assert keys == ["schedule:poll:2026-12-07T12:00:01Z", None]


async def test_the_same_tick_fired_concurrently_is_stored_once(url: str) -> None:
    """Several processes' schedulers (a backend instance each) fire the same ticks at once."""
    instances = [backend_from_url(url) for _ in range(4)]
    for b in instances:
        await b.open()
    try:
        await instances[0].save_schedules([every()])
        await arm(instances[0], await stored(instances[0], "poll"))
        for second in range(1, 6):
            now = T0 + timedelta(seconds=second)
            reads = await asyncio.gather(*(stored(b, "poll") for b in instances))
            steps = [firing(s, due(s, now)) for s in reads]
            won = await asyncio.gather(
                *(b.fire_schedule(s) for b, s in zip(instances, steps, strict=True) if s)
            )
            assert sum(won) == 1
        jobs = await instances[0].list_jobs(JobFilter(queue="q"))
        assert sorted(j.key or "" for j in jobs) == [
            tick_key("poll", T0 + timedelta(seconds=s)) for s in range(1, 6)
        ]
    finally:
        for b in instances:
            await b.close()


async def test_the_last_tick_never_goes_back(backend: Backend) -> None:
    await backend.save_schedules([every()])
    await arm(backend, await stored(backend, "poll"))
    # a step read from an older state, and a step that would move the tick backwards
    stale = Firing("poll", None, (T0 - timedelta(seconds=5)).timestamp(), ())
    back = Firing("poll", T0.timestamp(), (T0 - timedelta(seconds=5)).timestamp(), ())
    same = Firing("poll", T0.timestamp(), T0.timestamp(), ())
    assert not any([await backend.fire_schedule(f) for f in (stale, back, same)])
    assert (await stored(backend, "poll")).last_tick == T0
    # an unknown schedule is not fired (nor created)
    assert not await backend.fire_schedule(Firing("gone", None, T0.timestamp(), ()))
    assert [s.name for s in await backend.list_schedules()] == ["poll"]


async def test_a_tick_whose_job_was_pruned_is_not_enqueued_again(backend: Backend) -> None:
    await backend.save_schedules([every()])
    schedule = await arm(backend, await stored(backend, "poll"))
    first = firing(schedule, due(schedule, T0 + timedelta(seconds=1)))
    assert first is not None and await backend.fire_schedule(first)
    [job] = await backend.lease(queue="q", limit=1, worker_id="w", lease_s=30)
    assert await backend.complete([job.lease]) == []
    far = datetime.now(UTC).timestamp() + 3600
    assert await backend.prune(PruneSpec(far, far, far)) == 1
    assert not await backend.fire_schedule(first)  # a slow scheduler's repeat of that tick
    assert await backend.list_jobs(JobFilter(queue="q")) == []


async def test_a_firing_stores_its_jobs_beside_existing_keys(backend: Backend) -> None:
    """The tick's job was enqueued by hand with its key already: the firing still advances."""
    await backend.save_schedules([every()])
    schedule = await arm(backend, await stored(backend, "poll"))
    step = firing(schedule, due(schedule, T0 + timedelta(seconds=1)))
    assert step is not None
    [existing] = await backend.enqueue(list(step.jobs))
    assert await backend.fire_schedule(step)
    [job] = await backend.list_jobs(JobFilter(queue="q"))
    assert job.id == existing.id


async def test_after_downtime_only_catch_up_ticks_are_enqueued(
    app: Forebay, caplog: pytest.LogCaptureFixture
) -> None:
    """The schedulers of an app are down for a minute: the first round after it enqueues the
    newest ``catch_up`` missed ticks and logs the others as skipped."""
    app.schedule("q", every=timedelta(seconds=1), name="poll", catch_up=3)
    app.schedule("q", cron="* * * * *", name="minutely")
    backend = await app.open()
    schedulers = [Scheduler(backend, list(app.schedules.values())) for _ in range(3)]
    await asyncio.gather(*(s.run_once(T0) for s in schedulers))  # armed, nothing enqueued
    assert await app.list_jobs(JobFilter(queue="q")) == []

    with caplog.at_level(logging.WARNING, logger="forebay.scheduler"):
        later = T0 + timedelta(minutes=5, seconds=0.5)
        waits = await asyncio.gather(*(s.run_once(later) for s in schedulers))
    assert sum(s.enqueued for s in schedulers) == 4
    jobs = await app.list_jobs(JobFilter(queue="q"))
    assert sorted(j.key or "" for j in jobs) == [
        "schedule:minutely:2026-12-07T12:05:00Z",
        "schedule:poll:2026-12-07T12:04:58Z",
        "schedule:poll:2026-12-07T12:04:59Z",
        "schedule:poll:2026-12-07T12:05:00Z",
    ]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert sorted(skipped) == [
        "schedule minutely: skipped 4 missed tick(s) (catch_up=1 keeps the newest only)",
        "schedule poll: skipped 297 missed tick(s) (catch_up=3 keeps the newest only)",
    ]
    assert all(w == pytest.approx(0.5) for w in waits)  # until the next second's tick
    by_name = {s.name: s for s in await app.list_schedules()}
    assert by_name["poll"].last_tick == by_name["minutely"].last_tick == T0 + timedelta(minutes=5)


async def test_a_schedule_that_cannot_fire_does_not_stop_the_others(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A schedule stored by a host that knows a timezone this one does not (not checked)."""
    alien = Schedule(name="alien", queue="q", cron="* * * * *", tz="Mars/Olympus")
    await backend.save_schedules([alien, every()])
    scheduler = Scheduler(backend)
    with caplog.at_level(logging.ERROR, logger="forebay.scheduler"):
        await scheduler.run_once(T0)
        await scheduler.run_once(T0 + timedelta(seconds=1))
    assert scheduler.enqueued == 1
    [job] = await backend.list_jobs(JobFilter(queue="q"))
    assert job.key == tick_key("poll", T0 + timedelta(seconds=1))
    assert "schedule alien cannot fire: " in caplog.text and "Mars/Olympus" in caplog.text


async def test_saving_a_name_twice_in_one_call_keeps_the_last(backend: Backend) -> None:
    await backend.save_schedules([every(seconds=5), every(seconds=7)])
    [schedule] = await backend.list_schedules()
    assert schedule.every == timedelta(seconds=7)
