"""Crash isolation decides which leased jobs run beside others and which run alone."""

from __future__ import annotations

from forebay.job import Job, JobState
from forebay.worker.isolation import admit, crashed_before


def _job(job_id: int, *, attempt: int = 1, deliveries: int = 1) -> Job:
    return Job(
        id=job_id,
        queue="q",
        payload={},
        state=JobState.RUNNING,
        attempt=attempt,
        deliveries=deliveries,
    )


def test_a_job_is_a_suspect_when_it_was_delivered_more_often_than_tried() -> None:
    assert not crashed_before(_job(1))  # first lease
    assert not crashed_before(_job(1, attempt=3, deliveries=3))  # two errors, no crash
    assert crashed_before(_job(1, attempt=1, deliveries=2))  # its worker died once
    assert crashed_before(_job(1, attempt=2, deliveries=4))


def test_innocent_jobs_all_start() -> None:
    jobs = [_job(1), _job(2), _job(3)]
    decision = admit(jobs, others_running=True)
    assert decision.start == jobs
    assert decision.alone is None and not decision.release and not decision.drain


def test_an_idle_process_runs_the_first_suspect_alone_and_gives_back_the_rest() -> None:
    jobs = [_job(1), _job(2, deliveries=2), _job(3), _job(4, deliveries=2)]
    decision = admit(jobs, others_running=False)
    assert decision.alone is jobs[1]
    assert decision.start == []
    assert [j.id for j in decision.release] == [1, 3, 4]
    assert not decision.drain


def test_a_busy_process_starts_the_innocent_and_drains_for_the_suspects() -> None:
    jobs = [_job(1, deliveries=2), _job(2), _job(3, deliveries=3)]
    decision = admit(jobs, others_running=True)
    assert [j.id for j in decision.start] == [2]
    assert [j.id for j in decision.release] == [1, 3]
    assert decision.alone is None and decision.drain
