"""One vocabulary for outcomes: the worker's, the observers', the metrics' and the logs'."""

from __future__ import annotations

import logging

import pytest

from forebay.job import Job, JobState
from forebay.metrics import Metrics, PrometheusObserver
from forebay.observer import Outcome
from forebay.outcome import JobOutcome
from forebay.worker.outcome_logger import OutcomeLogger


def _job(**fields: object) -> Job:
    return Job(id=3, queue="docs", payload={}, state=JobState.RUNNING, attempt=2, **fields)  # type: ignore[arg-type]


def test_observers_and_metrics_speak_job_outcomes() -> None:
    assert Outcome is JobOutcome
    assert JobOutcome.DEAD == "dead"
    metrics = Metrics()
    assert set(metrics.outcomes) == set(JobOutcome)  # a counter for each, named after it
    observer = PrometheusObserver(metrics)
    for outcome in JobOutcome:
        observer.settled(_job(), outcome, 0.5)
    text = metrics.exposition().decode()
    for outcome in JobOutcome:
        assert f'forebay_jobs_{outcome}_total{{queue="docs"}} 1.0' in text


def test_the_outcome_logger_writes_one_line_per_outcome(caplog: pytest.LogCaptureFixture) -> None:
    logger = OutcomeLogger()
    caplog.set_level(logging.DEBUG, logger="forebay.worker")
    logger.settled(_job(), JobOutcome.COMPLETED, 0.1)
    logger.settled(
        _job(error="TimeoutError: slow", error_type="TimeoutError"), JobOutcome.RETRIED, 1
    )
    logger.settled(_job(), JobOutcome.RELEASED, 0.0)  # counted by the worker in one line
    completed, retried = caplog.records
    assert (completed.levelno, completed.getMessage()) == (logging.DEBUG, "job 3 completed")
    assert (completed.outcome, completed.error) == ("complete", None)  # type: ignore[attr-defined]
    assert (retried.levelno, retried.getMessage()) == (logging.INFO, "job 3 retrying")
    assert retried.outcome == "retry" and retried.error == "TimeoutError: slow"  # type: ignore[attr-defined]
    assert (retried.job_id, retried.queue, retried.attempt) == (3, "docs", 2)  # type: ignore[attr-defined]
