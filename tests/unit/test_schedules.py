"""Which ticks of a schedule are due (forebay.schedules): cron, intervals, timezones, DST, and
the catch-up bound, as pure functions of the schedule, its last tick and now."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from forebay import ConfigError, Forebay, Schedule
from forebay.schedules import Cron, Every, due, firing, next_tick, tick_key

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def at(schedule: Schedule, last: datetime | None) -> Schedule:
    return replace(schedule, last_tick=last)


def test_an_interval_ticks_at_its_multiples_since_the_epoch() -> None:
    s = Schedule.create("q", every=timedelta(seconds=30))
    verdict = due(at(s, T0), T0 + timedelta(seconds=75))
    assert verdict.ticks == (T0 + timedelta(seconds=60),)
    assert verdict.skipped == 1  # the tick at +30 s
    assert verdict.last == T0 + timedelta(seconds=60)
    assert due(at(s, T0), T0 + timedelta(seconds=29)).last is None  # nothing yet
    assert next_tick(s, T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=30)
    assert next_tick(s, T0) == T0 + timedelta(seconds=30)


def test_a_schedule_seen_for_the_first_time_is_armed_without_firing() -> None:
    s = Schedule.create("q", cron="0 3 * * *")
    verdict = due(s, T0)
    assert verdict.ticks == () and verdict.skipped == 0
    assert verdict.last == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    step = firing(s, verdict)
    assert step is not None and step.after is None and step.jobs == ()


def test_cron_ticks_on_time_and_keys_name_the_tick() -> None:
    s = Schedule.create("q", cron="*/5 * * * *", name="poll", payload={"a": 1}, priority=3)
    verdict = due(at(s, T0), T0 + timedelta(minutes=5))  # exactly on the tick
    assert verdict.ticks == (T0 + timedelta(minutes=5),) and verdict.skipped == 0
    step = firing(at(s, T0), verdict)
    assert step is not None
    [job] = step.jobs
    assert job.key == "schedule:poll:2026-12-07T12:05:00Z" == tick_key("poll", verdict.ticks[0])
    assert job.queue == "q" and job.priority == 3 and job.payload == {"a": 1}
    assert step.after == T0.timestamp() and step.tick == verdict.ticks[0].timestamp()
    assert due(at(s, T0 + timedelta(minutes=5)), T0 + timedelta(minutes=9)).last is None


@pytest.mark.parametrize("catch_up", [1, 3])
def test_after_downtime_at_most_catch_up_ticks_are_enqueued(catch_up: int) -> None:
    """Down for a day: the newest catch_up ticks, the others skipped and counted."""
    for s in (
        Schedule.create("q", cron="*/5 * * * *", catch_up=catch_up),
        Schedule.create("q", every=timedelta(minutes=5), catch_up=catch_up),
    ):
        verdict = due(at(s, T0), T0 + timedelta(days=1, seconds=10))
        newest = T0 + timedelta(days=1)
        assert verdict.ticks == tuple(
            newest - timedelta(minutes=5 * k) for k in reversed(range(catch_up))
        )
        assert verdict.skipped == 24 * 12 - catch_up
        assert verdict.last == newest


def test_an_interval_after_years_of_downtime_is_one_step() -> None:
    s = Schedule.create("q", every=timedelta(seconds=1))
    verdict = due(at(s, T0), T0 + timedelta(days=3650))
    assert len(verdict.ticks) == 1 and verdict.skipped == 3650 * 86400 - 1


def test_cron_reads_the_wall_clock_of_its_timezone() -> None:
    s = Schedule.create("q", cron="0 3 * * *", tz="Europe/Berlin")
    last = datetime(2026, 12, 6, 3, 0, tzinfo=BERLIN)
    verdict = due(at(s, last), datetime(2026, 12, 7, 2, 30, tzinfo=UTC))
    assert verdict.ticks == (datetime(2026, 12, 7, 2, 0, tzinfo=UTC),)  # 03:00 CET


def test_a_time_skipped_by_spring_forward_runs_once_after_the_gap() -> None:
    # 2026-03-29: Berlin goes from 02:00 to 03:00; 02:30 does not exist that day.
    s = Schedule.create("q", cron="30 2 * * *", tz="Europe/Berlin")
    last = datetime(2026, 3, 28, 2, 30, tzinfo=BERLIN)
    verdict = due(at(s, last), datetime(2026, 3, 29, 12, 0, tzinfo=UTC))
    assert verdict.ticks == (datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN),)
    assert verdict.skipped == 0


def test_a_time_repeated_by_fall_back_runs_once() -> None:
    # 2026-10-25: Berlin goes from 03:00 back to 02:00; 02:30 happens twice.
    s = Schedule.create("q", cron="30 2 * * *", tz="Europe/Berlin", catch_up=5)
    last = datetime(2026, 10, 24, 2, 30, tzinfo=BERLIN)
    verdict = due(at(s, last), datetime(2026, 10, 25, 12, 0, tzinfo=UTC))
    assert len(verdict.ticks) == 1 and verdict.skipped == 0


def test_hourly_cron_across_fall_back_fires_every_real_hour_once() -> None:
    s = Schedule.create("q", cron="0 * * * *", tz="Europe/Berlin", catch_up=10)
    last = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # 01:00 CEST
    verdict = due(at(s, last), datetime(2026, 10, 25, 2, 0, tzinfo=UTC))  # 03:00 CET
    assert len(set(verdict.ticks)) == len(verdict.ticks) >= 2
    assert all(t > last for t in verdict.ticks)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "give cron=... or every=..."),
        ({"cron": "* * * * *", "every": timedelta(seconds=5)}, "give cron=... or every=..."),
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "* * *"}, "bad cron expression"),
        ({"every": timedelta(milliseconds=10)}, "at least 1 second"),
        ({"every": timedelta(seconds=5), "tz": "Europe/Berlin"}, "tz applies to cron"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown timezone"),
        ({"cron": "* * * * *", "catch_up": 0}, "catch_up must be at least 1"),
        ({"cron": "* * * * *", "payload": {1, 2}}, "JSON"),
        ({"cron": "* * * * *", "name": "no spaces"}, "schedule 'no spaces'"),
    ],
)
def test_bad_schedules_are_refused_saying_why(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Schedule.create("q", **options)  # type: ignore[arg-type]


def test_the_app_declares_schedules_and_handlers_with_one() -> None:
    app = Forebay("sqlite:///unused.db")

    @app.handler("poll", schedule=Every(timedelta(seconds=30)))
    async def poll(job: object) -> None: ...

    @app.handler("nightly", schedule=Cron("0 3 * * *", tz="Europe/Berlin"))
    async def nightly(job: object) -> None: ...

    app.schedule("poll", every=timedelta(minutes=5), name="poll-slow", payload={"slow": True})
    assert sorted(app.schedules) == ["nightly", "poll", "poll-slow"]
    assert app.schedules["nightly"].tz == "Europe/Berlin"
    assert app.schedules["poll"].spec == "every 30s"
    with pytest.raises(ConfigError, match="already declared"):
        app.schedule("poll", cron="* * * * *")


def test_an_odd_interval_never_repeats_a_tick() -> None:
    """Ticks of 1.1 s fall between microseconds' float roundings: counted exactly, none twice."""
    s = Schedule.create("q", every=timedelta(seconds=1.1), catch_up=5)
    last = due(s, T0).last
    assert last is not None
    seen: list[datetime] = []
    now = T0
    for _ in range(200):
        now += timedelta(seconds=0.7)
        verdict = due(at(s, last), now)
        seen += verdict.ticks
        last = verdict.last or last
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    steps = {b - a for a, b in pairwise(seen)}
    assert steps == {timedelta(seconds=1.1)}
    assert next_tick(s, seen[-1]) == seen[-1] + timedelta(seconds=1.1)


def test_a_refused_handler_declares_no_schedule() -> None:
    async def poll(job: object) -> None: ...

    app = Forebay("sqlite:///unused.db")
    app.schedule("poll", cron="* * * * *")
    with pytest.raises(ConfigError, match="already declared"):
        app.handler("poll", schedule=Every(timedelta(seconds=5)))(poll)
    assert "poll" not in app.queues and app.schedules["poll"].cron == "* * * * *"
    with pytest.raises(ConfigError, match="invalid concurrency"):
        app.handler("other", concurrency=0, schedule=Every(timedelta(seconds=5)))(poll)
    assert sorted(app.schedules) == ["poll"]
