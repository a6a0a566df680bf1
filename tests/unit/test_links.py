"""A job's links (run, after, after_policy, webhook, parent_id) and a new run are validated
before anything reaches a store."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from forebay import InvalidPayload, NewJob
from forebay.job import JobState
from forebay.runs import NewRun, new_run_id


def test_after_is_kept_sorted_without_repeats() -> None:
    job = NewJob.create("q", {}, after=[5, 3, 5, 1])
    assert job.after == (1, 3, 5) and job.after_policy == "completed"
    stored = job.stored_as(7, datetime.now(UTC), JobState.WAITING)
    assert stored.after == (1, 3, 5) and stored.state is JobState.WAITING


@pytest.mark.parametrize(
    "after",
    [[0], [-1], ["1"], [True], [1.5], "12", list(range(1, 102))],
)
def test_bad_parents_are_refused(after: object) -> None:
    with pytest.raises(InvalidPayload, match=r"after|parents"):
        NewJob.create("q", {}, after=after)  # type: ignore[arg-type]


def test_after_policy_and_parent_id_are_checked() -> None:
    assert NewJob.create("q", {}, after=[1], after_policy="always").after_policy == "always"
    with pytest.raises(InvalidPayload, match="after_policy"):
        NewJob.create("q", {}, after=[1], after_policy="sometimes")
    with pytest.raises(InvalidPayload, match="parent_id"):
        NewJob.create("q", {}, parent_id="7")  # type: ignore[arg-type]
    assert NewJob.create("q", {}, parent_id=7).parent_id == 7


@pytest.mark.parametrize(
    "url",
    ["", "ftp://example.com/x", "example.com/hook", "https://", "http://x/" + "a" * 2048, 42],
)
def test_bad_webhooks_are_refused(url: object) -> None:
    with pytest.raises(InvalidPayload, match="webhook"):
        NewJob.create("q", {}, webhook=url)  # type: ignore[arg-type]
    with pytest.raises(InvalidPayload, match="webhook"):
        NewRun.create(webhook=url)  # type: ignore[arg-type]


def test_a_good_webhook_and_run_are_kept() -> None:
    job = NewJob.create("q", {}, webhook="https://example.com/hook?x=1", run="r-1")
    assert job.webhook == "https://example.com/hook?x=1" and job.run_id == "r-1"
    with pytest.raises(InvalidPayload, match="run"):
        NewJob.create("q", {}, run="")


def test_a_new_run_is_validated() -> None:
    run = NewRun.create(name="n", key="k", meta={"a": [1]}, on_complete="done")
    assert (run.name, run.key, run.meta_json, run.on_complete) == ("n", "k", '{"a":[1]}', "done")
    assert len(run.id) == 32 and int(run.id, 16) >= 0
    with pytest.raises(InvalidPayload, match="name"):
        NewRun.create(name="")
    with pytest.raises(InvalidPayload, match="key"):
        NewRun.create(key="x" * 513)
    with pytest.raises(InvalidPayload, match="meta"):
        NewRun.create(meta=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidPayload, match="meta"):
        NewRun.create(meta={"big": "x" * 70_000})
    with pytest.raises(InvalidPayload, match="queue"):
        NewRun.create(on_complete="bad queue!")


def test_run_ids_are_time_ordered() -> None:
    first = new_run_id()
    time.sleep(0.002)
    second = new_run_id()
    assert first < second and len({new_run_id() for _ in range(100)}) == 100


def test_run_ids_made_in_the_same_millisecond_still_increase() -> None:
    ids = [new_run_id() for _ in range(2000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[::100])
