"""What an outcome does to its job, decided by a pure function (DESIGN §3.3–3.5)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from forebay import Backoff, Defer, PermanentError, QueueConfig, TransientError
from forebay.job import Deferral, Failure, Job, JobState, Lease, Retry
from forebay.outcome import JobOutcome
from forebay.worker.decision import MAX_ERROR_CHARS, CrashLoop, crash_loops, decide

NOW = 1_000_000.0
CONFIG = QueueConfig("docs", max_attempts=3, max_defers=2, backoff=Backoff.fixed(5, 25))


def _job(*, attempt: int = 1, deliveries: int = 1, defers: int = 0) -> Job:
    return Job(
        id=7,
        queue="docs",
        payload={},
        state=JobState.RUNNING,
        attempt=attempt,
        deliveries=deliveries,
        defers=defers,
        lease_token="token",
    )


def test_success_completes_the_job() -> None:
    decision = decide(_job(), CONFIG, None, NOW)
    assert decision.outcome is JobOutcome.COMPLETED
    assert decision.transition == Lease(7, "token")
    assert decision.error is None and decision.error_text is None


@pytest.mark.parametrize(
    "error", [TransientError("flaky"), ValueError("flaky"), TimeoutError("flaky")]
)
def test_other_errors_retry_after_the_backoff_while_attempts_remain(error: Exception) -> None:
    first = decide(_job(attempt=1), CONFIG, error, NOW)
    name = type(error).__name__
    assert first.outcome is JobOutcome.RETRIED
    assert first.transition == Retry(Lease(7, "token"), NOW + 5, f"{name}: flaky", name)
    second = decide(_job(attempt=2), CONFIG, error, NOW)
    assert isinstance(second.transition, Retry) and second.transition.run_at == NOW + 25


def test_the_last_attempt_is_dead() -> None:
    decision = decide(_job(attempt=3), CONFIG, TransientError("flaky"), NOW)
    assert decision.outcome is JobOutcome.DEAD
    assert decision.transition == Failure(
        Lease(7, "token"), "TransientError: flaky", "TransientError"
    )


def test_a_permanent_error_is_dead_at_once() -> None:
    error = PermanentError("malformed")
    decision = decide(_job(attempt=1), CONFIG, error, NOW)
    assert decision.outcome is JobOutcome.DEAD and decision.error is error
    assert decision.error_text == "PermanentError: malformed"


def test_defer_puts_the_job_back_without_an_error() -> None:
    decision = decide(_job(defers=1), CONFIG, Defer(60, "rate limited"), NOW)
    assert decision.outcome is JobOutcome.DEFERRED
    assert decision.transition == Deferral(Lease(7, "token"), NOW + 60, "rate limited")


def test_defers_past_max_defers_count_as_an_error() -> None:
    defer = Defer(60, "busy")
    retried = decide(_job(attempt=1, defers=2), CONFIG, defer, NOW)
    assert retried.outcome is JobOutcome.RETRIED
    assert retried.error_type == "RuntimeError"
    assert retried.error_text == "RuntimeError: deferred 2 times (max_defers): busy"
    dead = decide(_job(attempt=3, defers=2), CONFIG, defer, NOW)
    assert dead.outcome is JobOutcome.DEAD and isinstance(dead.error, RuntimeError)


def test_deciding_changes_nothing_it_was_given() -> None:
    defer = Defer(60, "busy")
    job = _job(attempt=1, defers=2)
    before = (replace(job), defer.args, dict(vars(defer)))
    first = decide(job, CONFIG, defer, NOW)
    second = decide(job, CONFIG, defer, NOW)
    assert first == replace(second, error=first.error)  # the same decision, from the same input
    assert (job, defer.args, dict(vars(defer))) == before


def test_jitter_is_repeatable_with_a_seeded_rng() -> None:
    jittered = replace(CONFIG, backoff=Backoff(base_s=10, cap_s=100))
    error = TransientError("flaky")
    a = decide(_job(), jittered, error, NOW, rng=random.Random(7))
    b = decide(_job(), jittered, error, NOW, rng=random.Random(7))
    assert a == b
    assert isinstance(a.transition, Retry) and NOW <= a.transition.run_at <= NOW + 10


def test_a_crash_loop_is_dead_with_its_own_type() -> None:
    config = replace(CONFIG, max_deliveries=4)
    fine, looping = _job(deliveries=4), _job(deliveries=5)
    [(job, error)] = crash_loops([fine, looping], config)
    assert job is looping
    assert isinstance(error, CrashLoop) and isinstance(error, PermanentError)
    decision = decide(looping, config, error, NOW)
    assert decision.outcome is JobOutcome.DEAD
    assert decision.error_type == "CrashLoop"
    assert decision.error_text == (
        "delivered 5 times without finishing (max_deliveries=4): its worker keeps dying"
    )


def test_error_text_is_bounded_and_never_empty() -> None:
    long = decide(_job(), CONFIG, TransientError("x" * 10_000), NOW)
    assert long.error_text is not None and len(long.error_text) == MAX_ERROR_CHARS
    bare = decide(_job(), CONFIG, KeyError(), NOW)
    assert (bare.error_text, bare.error_type) == ("KeyError", "KeyError")


def test_a_jobs_own_max_attempts_replaces_the_queues() -> None:
    error = TransientError("flaky")
    more = replace(_job(attempt=3), max_attempts=5)
    assert decide(more, CONFIG, error, NOW).outcome is JobOutcome.RETRIED
    assert decide(_job(attempt=3), CONFIG, error, NOW).outcome is JobOutcome.DEAD
    fewer = replace(_job(attempt=1), max_attempts=1)
    assert decide(fewer, CONFIG, error, NOW).outcome is JobOutcome.DEAD


def test_a_jobs_own_max_attempts_raises_its_delivery_limit() -> None:
    from forebay.worker.decision import delivery_limit

    assert delivery_limit(_job(), CONFIG) == 6  # the queue's max_attempts + 3
    assert delivery_limit(replace(_job(), max_attempts=10), CONFIG) == 13
    capped = replace(CONFIG, max_deliveries=4)
    assert delivery_limit(_job(), capped) == 4
    assert delivery_limit(replace(_job(), max_attempts=9), capped) == 9  # every attempt is one
    looping = replace(_job(deliveries=7), max_attempts=10)
    assert crash_loops([looping], CONFIG) == []
    assert [job.id for job, _ in crash_loops([_job(deliveries=7)], CONFIG)] == [7]


def test_a_calls_timeout_is_the_jobs_own_else_the_queues() -> None:
    from forebay.worker.decision import call_timeout_s

    queue = replace(CONFIG, timeout_s=30.0)
    assert call_timeout_s([_job()], queue) == 30.0
    assert call_timeout_s([replace(_job(), timeout_s=2.0)], queue) == 2.0
    batch = [replace(_job(), timeout_s=2.0), replace(_job(), timeout_s=90.0)]
    assert call_timeout_s(batch, queue) == 90.0  # no job of a batch gets less than its own
    assert call_timeout_s([replace(_job(), timeout_s=2.0), _job()], queue) == 30.0
