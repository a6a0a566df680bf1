"""A stored job becomes the same Job whatever the engine, its payload read only when used."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from forebay.backends.rows import COLUMNS, job_from_hash, job_from_row
from forebay.job import AttemptError, Job, JobState, PayloadText, StoredText
from forebay.sqlfiles import render

T0 = 1_750_000_000.123456
STORED = {
    "id": 7,
    "queue": "documents",
    "payload": '{"url": "a.pdf", "n": [1, 2.5]}',
    "state": "running",
    "key": "doc-7",
    "priority": 3,
    "attempt": 2,
    "deliveries": 3,
    "defers": 1,
    "run_at": T0,
    "created_at": T0 - 10,
    "updated_at": T0 + 1,
    "finished_at": T0 + 2,
    "lease_token": "token",
    "lease_expires_at": T0 + 30,
    "worker_id": "host:1",
    "progress": 50.0,
    "progress_message": "half",
    "error": "boom",
    "error_type": "TransientError",
    "run_id": "run-1",
    "started_at": T0 - 1,
    "result": '{"rows": 3}',
    "errors": '[{"attempt": 1, "at": 1750000000.5, "type": "KeyError", "message": "KeyError: 1",'
    ' "traceback": "Traceback (most recent call last):\\n  File \\"h.py\\", line 3"}]',
    "max_attempts": 4,
    "timeout_s": 2.5,
    "after_ids": "[3, 5]",
    "after_policy": "always",
    "webhook": "https://hooks.example.com/done",
    "parent_id": 2,
    "tenant": "acme",
    "rate_key": "u1",
    "concurrency_key": "host-a",
    "fair_key": "acme",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}
TIMES = ("run_at", "created_at", "updated_at", "finished_at", "lease_expires_at", "started_at")


def _expected() -> Job:
    def at(name: str) -> datetime:
        return datetime.fromtimestamp(float(STORED[name]), UTC)

    return Job(
        id=7,
        queue="documents",
        payload={"url": "a.pdf", "n": [1, 2.5]},
        state=JobState.RUNNING,
        key="doc-7",
        priority=3,
        attempt=2,
        deliveries=3,
        defers=1,
        run_at=at("run_at"),
        created_at=at("created_at"),
        updated_at=at("updated_at"),
        finished_at=at("finished_at"),
        lease_token="token",
        lease_expires_at=at("lease_expires_at"),
        worker_id="host:1",
        progress_pct=50.0,
        progress_message="half",
        error="boom",
        error_type="TransientError",
        run_id="run-1",
        started_at=at("started_at"),
        result={"rows": 3},
        errors=(
            AttemptError(
                attempt=1,
                at=datetime.fromtimestamp(1750000000.5, UTC),
                type="KeyError",
                message="KeyError: 1",
                traceback='Traceback (most recent call last):\n  File "h.py", line 3',
            ),
        ),
        max_attempts=4,
        timeout_s=2.5,
        after=(3, 5),
        after_policy="always",
        webhook="https://hooks.example.com/done",
        parent_id=2,
        tenant="acme",
        rate_key="u1",
        concurrency_key="host-a",
        fair_key="acme",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )


def test_a_row_with_epoch_times_and_one_with_datetimes_make_the_same_job() -> None:
    epoch = tuple(STORED[name] for name in COLUMNS)
    aware = tuple(
        datetime.fromtimestamp(STORED[name], UTC) if name in TIMES else STORED[name]
        for name in COLUMNS
    )
    assert job_from_row(epoch, epoch_times=True) == _expected()
    assert job_from_row(aware) == _expected()
    assert not job_from_row(aware, created=False).created


def test_a_redis_hash_is_read_field_by_field_in_the_order_of_the_columns() -> None:
    fields = {name: str(value) for name, value in STORED.items() if name != "id"}
    fields["created_at"] = repr(STORED["created_at"])
    assert job_from_hash("7", fields) == _expected()
    queued = {"queue": "q", "payload": "null", "state": "queued"}  # every other field unset
    job = job_from_hash(8, queued)
    assert (job.priority, job.attempt, job.run_at, job.progress_pct, job.key) == (
        0,
        0,
        None,
        None,
        None,
    )


def test_a_payload_is_parsed_on_first_read_and_crosses_processes_as_text() -> None:
    job = job_from_row(tuple(STORED[name] for name in COLUMNS), epoch_times=True)
    assert type(job.payload_text) is PayloadText
    assert job.payload_text == STORED["payload"]
    crossed = pickle.loads(pickle.dumps(job))
    assert type(crossed.payload_text) is PayloadText  # not parsed by pickling
    assert crossed.payload == {"url": "a.pdf", "n": [1, 2.5]}
    assert crossed.payload is crossed.payload  # parsed once
    assert crossed.payload_text == '{"url":"a.pdf","n":[1,2.5]}'  # encoded again
    assert replace(job, attempt=9).payload == crossed.payload


def test_a_result_and_errors_history_are_read_on_first_use_and_cross_as_text() -> None:
    job = job_from_row(tuple(STORED[name] for name in COLUMNS), epoch_times=True)
    crossed = pickle.loads(pickle.dumps(job))
    assert crossed.__getstate__()["errors"] == STORED["errors"]  # still text
    assert type(crossed.__getstate__()["result"]) is StoredText
    assert crossed.result == {"rows": 3} and crossed.errors == _expected().errors
    assert crossed.to_dict()["errors"] == [
        {
            "attempt": 1,
            "at": "2025-06-15T15:06:40.500000+00:00",
            "type": "KeyError",
            "message": "KeyError: 1",
            "traceback": 'Traceback (most recent call last):\n  File "h.py", line 3',
        }
    ]
    assert "errors" not in crossed.to_dict(detail=False)
    empty = job_from_hash(8, {"queue": "q", "payload": "null", "state": "queued"})
    assert (empty.result, empty.errors, empty.started_at) == (None, (), None)


def test_a_job_built_with_a_value_keeps_it() -> None:
    job = Job(id=1, queue="q", payload="plain text", state=JobState.QUEUED)
    assert job.payload == "plain text" and job.payload_text == '"plain text"'


def test_a_placeholder_without_a_value_fails_at_load() -> None:
    assert render("SELECT {columns} FROM t", {"columns": "a, b"}) == "SELECT a, b FROM t"
    with pytest.raises(RuntimeError, match=r"no value for the placeholder \{colums\}"):
        render("SELECT {colums} FROM t", {"columns": "a, b"}, where="queries.sql: get_job")
