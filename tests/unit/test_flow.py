"""The flow rules as pure functions (forebay.flow): rates as GCRA buckets, the lease plan every
backend follows, keys worked out from a job, and a queue's declared limits.

Each test names the rule of flow.py's docstring it holds; time is a number given to the
function, never the clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forebay import ConfigError, InvalidPayload, NewJob, QueueConfig
from forebay.flow import (
    MAX_KEY_LENGTH,
    NO_LIMITS,
    Candidate,
    FlowLimits,
    FlowState,
    Rate,
    blocked_keys,
    budget,
    check_key,
    check_tenant,
    effective_priority,
    plan,
    resolve_key,
)

NOW = 1_000_000.0


def jobs(*specs: tuple[int, int], **keys: str | None) -> list[Candidate]:
    """Candidates ``(id, priority)`` due one second apart in id order, with the same keys."""
    return [Candidate(i, p, NOW - 100 + i, **keys) for i, p in specs]  # type: ignore[arg-type]


# -- Rate: text ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "count", "period_s"),
    [
        ("50/s", 50, 1.0),
        ("10/m", 10, 60.0),
        ("10/min", 10, 60.0),
        ("1000/h", 1000, 3600.0),
        ("100/d", 100, 86400.0),
        ("5/10s", 5, 10.0),
        (" 3 / 2m ", 3, 120.0),
        ("7/0.5s", 7, 0.5),
        ("20/S", 20, 1.0),
    ],
)
def test_a_rate_is_written_count_per_period(text: str, count: int, period_s: float) -> None:
    rate = Rate.parse(text)
    assert (rate.count, rate.period_s, rate.burst) == (count, period_s, count)
    assert Rate.parse(rate) is rate


@pytest.mark.parametrize("text", ["50", "/s", "50/", "50/x", "50/fortnight", "-1/s", "a/s", ""])
def test_a_badly_written_rate_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match="50/s"):
        Rate.parse(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0), "count"),
        ((True, 1.0), "count"),
        ((5, 0.0), "positive"),
        ((5, float("inf")), "finite"),
        ((5, 1.0, -1), "burst"),
    ],
)
def test_a_rate_refuses_impossible_values(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Rate(*args)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Rate.parse(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Rate.parse("0/s")


def test_a_rate_round_trips_through_its_text_and_its_stored_form() -> None:
    for text in ("50/s", "10/m", "1000/h", "100/d", "5/10s"):
        assert Rate.parse(text).to_text() == text
    rate = Rate(10, 1.0, burst=3)
    assert Rate.from_dict(rate.to_dict()) == rate
    assert Rate.from_dict({"count": 4, "period_s": 2}) == Rate(4, 2.0, burst=4)


# -- Rate: the GCRA bucket -------------------------------------------------------------------------
def test_a_full_bucket_gives_one_burst_then_one_token_per_interval() -> None:
    rate = Rate(5, 1.0)  # interval 0.2 s, burst 5
    assert rate.available(None, NOW) == 5
    tat = rate.spend(None, NOW, 5)
    assert tat == pytest.approx(NOW + 1.0)
    assert rate.available(tat, NOW) == 0
    assert rate.free_at(tat, NOW) == pytest.approx(NOW + 0.2)
    assert rate.available(tat, NOW + 0.2) == 1
    assert rate.available(tat, NOW + 0.5) == 2
    assert rate.available(tat, NOW + 100) == 5  # a long idle refills one burst, no more
    assert rate.free_at(None, NOW) == NOW
    assert rate.free_at(NOW - 5, NOW) == NOW  # an old tat: a full bucket


def test_a_burst_of_one_spaces_every_start() -> None:
    rate = Rate(20, 1.0, burst=1)
    tat = rate.spend(None, NOW, 1)
    assert rate.available(tat, NOW) == 0
    assert rate.free_at(tat, NOW) == pytest.approx(NOW + 0.05)
    assert rate.available(tat, NOW + 0.05) == 1


@given(
    count=st.integers(1, 50),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 0.5, allow_nan=False), min_size=1, max_size=200),
    asks=st.lists(st.integers(0, 10), min_size=1, max_size=200),
)
def test_over_any_window_starts_stay_within_the_rate_plus_one_burst(
    count: int, burst: int, gaps: list[float], asks: list[int]
) -> None:
    rate = Rate(count, 1.0, burst=burst)
    tat: float | None = None
    now, starts = NOW, []
    for gap, ask in zip(gaps, asks, strict=False):
        now += gap
        take = min(ask, rate.available(tat, now))
        if take:
            tat = rate.spend(tat, now, take)
            starts.extend([now] * take)
    for i, first in enumerate(starts):  # every window that begins at a start
        for window in (0.0, 0.3, 1.0, 2.5):
            inside = sum(1 for t in starts[i:] if t <= first + window)
            assert inside <= count * window / rate.period_s + burst + 1e-6


# -- FlowLimits -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "global_concurrency"),
        ({"concurrency": True}, "global_concurrency"),
        ({"concurrency_per_key": -2}, "concurrency_per_key"),
        ({"aging_s": 0}, "priority_aging"),
        ({"aging_s": float("nan")}, "priority_aging"),
    ],
)
def test_flow_limits_refuse_impossible_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FlowLimits(**kwargs)  # type: ignore[arg-type]


def test_flow_limits_round_trip_and_say_whether_leasing_must_look_at_them() -> None:
    limits = FlowLimits(
        rate=Rate(50, 1.0),
        rate_per_key=Rate(10, 60.0),
        concurrency=4,
        concurrency_per_key=2,
        fair=True,
        aging_s=30.0,
    )
    assert FlowLimits.from_dict(limits.to_dict()) == limits
    assert FlowLimits.from_dict(None) is NO_LIMITS and FlowLimits.from_dict({}) is NO_LIMITS
    assert not NO_LIMITS.active and not NO_LIMITS.keyed and NO_LIMITS.describe() == "-"
    assert FlowLimits(concurrency=3).active and not FlowLimits(concurrency=3).keyed
    assert FlowLimits(fair=True).keyed and FlowLimits(concurrency_per_key=1).keyed
    assert limits.describe() == (
        "rate 50/s, 10/m per key, cap 4, 2 running per key, fair, aging +1/30s"
    )


# -- the plan: order and aging ----------------------------------------------------------------------
def test_without_limits_the_plan_takes_the_best_first() -> None:
    found = [
        Candidate(3, 0, NOW - 10),
        Candidate(1, 0, NOW - 5),
        Candidate(2, 5, NOW - 1),
        Candidate(4, 0, NOW - 10),
    ]
    got = plan(NO_LIMITS, FlowState(), found, limit=3, now=NOW)
    # higher priority, then earlier run_at, then lower id
    assert got.ids == [2, 3, 4] and got.throttled_until is None


def test_aging_raises_a_waiting_job_one_step_per_aging_period() -> None:
    assert effective_priority(0, NOW - 95, NOW, 30.0) == 3  # floor(95 / 30)
    assert effective_priority(0, NOW - 95, NOW, None) == 0
    assert effective_priority(2, NOW + 50, NOW, 30.0) == 2  # not due: no aging
    old_low = Candidate(1, 0, NOW - 300)
    new_high = Candidate(2, 5, NOW - 1)
    limits = FlowLimits(aging_s=60.0)  # 300 s waited: +5, ties with 5; the earlier run_at wins
    assert plan(limits, FlowState(), [new_high, old_low], limit=1, now=NOW).ids == [1]
    assert plan(NO_LIMITS, FlowState(), [new_high, old_low], limit=1, now=NOW).ids == [2]
    younger = Candidate(1, 0, NOW - 299)  # +4 only
    assert plan(limits, FlowState(), [new_high, younger], limit=1, now=NOW).ids == [2]


# -- the plan: queue-wide limits ------------------------------------------------------------------
def test_the_queue_cap_counts_running_jobs_across_the_fleet() -> None:
    limits = FlowLimits(concurrency=3)
    assert budget(limits, FlowState(running=1), 10, NOW) == (2, None)
    got = plan(limits, FlowState(running=1), jobs((1, 0), (2, 0), (3, 0)), limit=10, now=NOW)
    assert got.ids == [1, 2]
    full = plan(limits, FlowState(running=3), jobs((1, 0)), limit=10, now=NOW)
    assert full.ids == [] and full.throttled_until is None  # the wait is on a finish, not time
    assert budget(limits, FlowState(running=5), 10, NOW) == (0, None)  # over the cap: none


def test_the_queue_rate_spends_one_token_per_start_and_says_when_the_next_frees() -> None:
    limits = FlowLimits(rate=Rate(2, 1.0))
    got = plan(limits, FlowState(), jobs((1, 0), (2, 0), (3, 0)), limit=10, now=NOW)
    assert got.ids == [1, 2]
    assert got.queue_tat == pytest.approx(NOW + 1.0)
    # fewer than asked because of the rate: when its next token frees
    assert got.throttled_until == pytest.approx(NOW + 0.5)
    empty = plan(limits, FlowState(queue_tat=got.queue_tat), jobs((3, 0)), limit=10, now=NOW)
    assert empty.ids == [] and empty.queue_tat is None
    assert empty.throttled_until == pytest.approx(NOW + 0.5)
    # a lease that got all it asked for is not throttled
    enough = plan(limits, FlowState(), jobs((1, 0), (2, 0)), limit=2, now=NOW)
    assert enough.ids == [1, 2] and enough.throttled_until is None


def test_an_unused_token_is_not_spent() -> None:
    limits = FlowLimits(rate=Rate(5, 1.0))
    got = plan(limits, FlowState(), jobs((1, 0)), limit=10, now=NOW)
    assert got.ids == [1] and got.queue_tat == pytest.approx(NOW + 0.2)
    assert plan(limits, FlowState(), [], limit=10, now=NOW).queue_tat is None


# -- the plan: per-key limits ---------------------------------------------------------------------
def test_each_rate_key_spends_from_its_own_bucket() -> None:
    limits = FlowLimits(rate_per_key=Rate(1, 1.0))
    found = [
        *jobs((1, 0), (2, 0), rate_key="a"),
        *jobs((3, 0), (4, 0), rate_key="b"),
        *jobs((5, 0), (6, 0)),  # no key: not limited by one
    ]
    got = plan(limits, FlowState(), found, limit=10, now=NOW)
    assert got.ids == [1, 3, 5, 6]
    assert got.key_tats == {"a": pytest.approx(NOW + 1.0), "b": pytest.approx(NOW + 1.0)}
    assert got.throttled_until == pytest.approx(NOW + 1.0)  # 2 and 4 wait for a token
    # a bucket that has a token later, read from the store
    state = FlowState(key_tats={"a": NOW + 0.4, "b": NOW + 1.0})
    later = plan(limits, state, jobs((2, 0), rate_key="a"), limit=10, now=NOW)
    assert later.ids == [] and later.throttled_until == pytest.approx(NOW + 0.4)
    assert blocked_keys(limits, state, NOW) == ({"a", "b"}, set())


def test_a_concurrency_key_at_its_cap_is_skipped_and_others_go_on() -> None:
    limits = FlowLimits(concurrency_per_key=2)
    state = FlowState(running_per_key={"acme": 1, "globex": 2})
    found = [
        *jobs((1, 0), (2, 0), (3, 0), concurrency_key="acme"),
        *jobs((4, 0), concurrency_key="globex"),
        *jobs((5, 0), concurrency_key="initech"),
    ]
    got = plan(limits, state, found, limit=10, now=NOW)
    assert got.ids == [1, 5]  # acme has one slot left, globex none, initech two
    assert got.throttled_until is None  # held by running jobs, not by a rate
    assert blocked_keys(limits, state, NOW) == (set(), {"globex"})


def test_a_job_held_by_its_key_spends_no_token_of_the_queue() -> None:
    limits = FlowLimits(rate=Rate(10, 1.0), rate_per_key=Rate(1, 1.0))
    got = plan(limits, FlowState(), jobs((1, 0), (2, 0), (3, 0), rate_key="a"), limit=5, now=NOW)
    assert got.ids == [1]
    assert got.queue_tat == pytest.approx(NOW + 0.1)  # one start: one token


# -- the plan: fair leasing -------------------------------------------------------------------------
def test_fair_keys_take_turns_one_job_each_per_round() -> None:
    limits = FlowLimits(fair=True)
    big = [Candidate(i, 0, NOW - 1000 + i, fair_key="big") for i in range(1, 101)]
    small = [Candidate(200 + i, 0, NOW - 10 + i, fair_key="small") for i in range(3)]
    got = plan(limits, FlowState(), [*big, *small], limit=6, now=NOW)
    # never served: ties by key text; then one each per round until small runs out
    assert got.ids == [1, 200, 2, 201, 3, 202]
    assert list(got.served) == ["big", "small"]  # in the order last served
    assert got.served["big"] < got.served["small"]
    no_fair = plan(NO_LIMITS, FlowState(), [*big, *small], limit=6, now=NOW)
    assert no_fair.ids == [1, 2, 3, 4, 5, 6]  # without fair: the backlog first


def test_the_least_recently_served_key_goes_first_and_no_key_is_a_group() -> None:
    limits = FlowLimits(fair=True)
    found = [
        *jobs((1, 0), (2, 0), fair_key="a"),
        *jobs((3, 0), (4, 0), fair_key="b"),
        *jobs((5, 0), (6, 0)),
    ]
    never = plan(limits, FlowState(), found, limit=3, now=NOW)
    assert never.ids == [5, 1, 3]  # ties (never served) by key text, no key first
    state = FlowState(served={"a": NOW - 5, "b": NOW - 50, None: NOW - 1})
    got = plan(limits, state, found, limit=4, now=NOW)
    assert got.ids == [3, 1, 5, 4]  # b served longest ago, then a, then no key
    assert got.served == {
        "a": pytest.approx(NOW, abs=1e-3),
        None: pytest.approx(NOW, abs=1e-3),
        "b": pytest.approx(NOW, abs=1e-3),
    }
    assert list(got.served) == ["a", None, "b"]  # b was served last (its second job)


def test_within_a_fair_key_the_best_job_goes_first() -> None:
    limits = FlowLimits(fair=True, aging_s=10.0)
    found = [
        Candidate(1, 0, NOW - 5, fair_key="a"),
        Candidate(2, 3, NOW - 1, fair_key="a"),
        Candidate(3, 0, NOW - 100, fair_key="a"),  # aged +10
    ]
    assert plan(limits, FlowState(), found, limit=3, now=NOW).ids == [3, 2, 1]


def test_a_fair_turn_skips_a_job_held_by_its_keys() -> None:
    limits = FlowLimits(fair=True, concurrency_per_key=1)
    state = FlowState(running_per_key={"x": 1})
    found = [
        Candidate(1, 0, NOW - 9, fair_key="a", concurrency_key="x"),
        Candidate(2, 0, NOW - 8, fair_key="a", concurrency_key="y"),
        Candidate(3, 0, NOW - 7, fair_key="b", concurrency_key="y"),
    ]
    # a's turn: 1 is held (x at its cap), 2 goes; b's turn: y is now at its cap
    assert plan(limits, state, found, limit=5, now=NOW).ids == [2]


def test_fair_leasing_obeys_the_queue_rate() -> None:
    limits = FlowLimits(fair=True, rate=Rate(3, 1.0))
    found = [*jobs((1, 0), (2, 0), fair_key="a"), *jobs((3, 0), (4, 0), fair_key="b")]
    got = plan(limits, FlowState(), found, limit=10, now=NOW)
    assert got.ids == [1, 3, 2]
    assert got.throttled_until == pytest.approx(NOW + 1 / 3)


# -- keys -------------------------------------------------------------------------------------------
def new(payload: object = None, **kw: object) -> NewJob:
    return NewJob.create("q", payload, **kw)  # type: ignore[arg-type]


def test_a_key_path_walks_the_payload() -> None:
    job = new({"user": {"id": 42, "org": "acme"}, "tags": ["x", "y"]}, tenant="t1", key="k")
    assert resolve_key("rate_key", "payload.user.id", job) == "42"  # an int: its text
    assert resolve_key("rate_key", "payload.user.org", job) == "acme"
    assert resolve_key("rate_key", "payload.tags.1", job) == "y"
    assert resolve_key("rate_key", "tenant", job) == "t1"
    assert resolve_key("rate_key", "key", job) == "k"
    assert resolve_key("rate_key", "queue", job) == "q"
    assert resolve_key("rate_key", None, job) is None
    for missing in ("payload.nope", "payload.user.id.deeper", "payload.tags.7", "payload.tags.x"):
        assert resolve_key("rate_key", missing, job) is None
    assert resolve_key("fair_key", "tenant", new({})) is None


def test_a_key_callable_is_given_the_job() -> None:
    job = new({"host": "Example.org"}, tenant="t1")
    assert resolve_key("k", lambda j: j.payload["host"].lower(), job) == "example.org"
    assert resolve_key("k", lambda j: j.tenant, job) == "t1"
    assert resolve_key("k", lambda j: None, job) is None
    with pytest.raises(InvalidPayload, match="k: the key function raised KeyError"):
        resolve_key("k", lambda j: j.payload["missing"], job)


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, ["a"], "", "x" * (MAX_KEY_LENGTH + 1)])
def test_a_key_must_be_a_short_string_or_a_whole_number(value: object) -> None:
    with pytest.raises(InvalidPayload, match="rate_key"):
        resolve_key("rate_key", "payload.v", new({"v": value}))
    with pytest.raises(InvalidPayload, match="fair_key"):
        check_key("fair_key", value)
    with pytest.raises(InvalidPayload):
        check_key("fair_key", "a\x00b")
    assert check_key("fair_key", "x" * MAX_KEY_LENGTH) == "x" * MAX_KEY_LENGTH


@pytest.mark.parametrize("name", ["", "-acme", "a b", "a/b", "x" * 101, 7])
def test_a_tenant_is_a_plain_name(name: object) -> None:
    with pytest.raises(InvalidPayload, match="tenant"):
        check_tenant(name)
    for good in ("acme", "org:42", "a.b-c_d@e", "7"):
        assert check_tenant(good) == good


# -- a queue's declared limits ----------------------------------------------------------------------
async def handle(job: object) -> None:
    return None


def test_a_queue_config_makes_its_flow_limits() -> None:
    config = QueueConfig(
        "q",
        handle,
        rate_limit="50/s",
        rate_limit_key="payload.user",
        rate_limit_per_key=Rate(10, 60.0, burst=2),
        global_concurrency=8,
        concurrency_key="tenant",
        concurrency_per_key=2,
        fair_key=lambda job: job.tenant,
        priority_aging=timedelta(minutes=1),
    )
    assert config.limits == FlowLimits(
        rate=Rate(50, 1.0),
        rate_per_key=Rate(10, 60.0, burst=2),
        concurrency=8,
        concurrency_per_key=2,
        fair=True,
        aging_s=60.0,
    )
    assert QueueConfig("q", handle).limits == NO_LIMITS
    assert QueueConfig("q", handle, priority_aging=15).limits == FlowLimits(aging_s=15.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_limit": "fast"}, "queue 'q': bad rate 'fast'"),
        ({"rate_limit_per_key": "1/s"}, "rate_limit_key and rate_limit_per_key go together"),
        ({"rate_limit_key": "tenant"}, "rate_limit_key and rate_limit_per_key go together"),
        ({"concurrency_per_key": 2}, "concurrency_key and concurrency_per_key go together"),
        ({"concurrency_key": "tenant"}, "concurrency_key and concurrency_per_key go together"),
        ({"global_concurrency": 0}, "global_concurrency"),
        ({"concurrency_key": "tenant", "concurrency_per_key": 0}, "concurrency_per_key"),
        ({"priority_aging": -1}, "priority_aging"),
        ({"priority_aging": timedelta(0)}, "priority_aging"),
        ({"fair_key": "user"}, "fair_key must be a callable or a path"),
        ({"fair_key": "payload."}, "fair_key must be a callable or a path"),
        ({"fair_key": 3}, "fair_key must be a callable or a path"),
    ],
)
def test_a_queue_config_says_what_is_wrong_with_its_limits(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        QueueConfig("q", handle, **kwargs)  # type: ignore[arg-type]


def test_a_producer_only_queue_may_name_keys_without_their_limits() -> None:
    config = QueueConfig("q", rate_limit_key="payload.user", concurrency_key="tenant")
    assert config.keyed and not config.limits.active
    with pytest.raises(ConfigError, match="go together"):  # a limit needs its key
        QueueConfig("q", rate_limit_per_key="1/s")


def test_keys_are_worked_out_for_what_a_job_does_not_carry() -> None:
    config = QueueConfig(
        "q",
        handle,
        rate_limit_key="payload.host",
        rate_limit_per_key="5/s",
        concurrency_key=lambda job: f"{job.tenant}:{job.payload['host']}",
        concurrency_per_key=1,
        fair_key="tenant",
    )
    job = config.with_flow_keys(new({"host": "a.org"}, tenant="acme"))
    assert (job.rate_key, job.concurrency_key, job.fair_key) == ("a.org", "acme:a.org", "acme")
    given = config.with_flow_keys(new({"host": "a.org"}, tenant="acme", rate_key="mine"))
    assert given.rate_key == "mine" and given.fair_key == "acme"  # given explicitly: it wins
    plain = QueueConfig("q", handle)
    assert not plain.keyed
    untouched = new({"host": "a.org"})
    assert plain.with_flow_keys(untouched) is untouched
