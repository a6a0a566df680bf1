"""What each attempt leaves behind, on every backend: started_at, the result, the errors history.

* a lease sets ``started_at``; a completion stores the handler's result (JSON) and clears the
  last error, while the history keeps it;
* every retry and dead letter appends ``{attempt, at, type, message, traceback}`` to the job's
  errors, the last ten kept in order, each traceback capped at 8 KB (its end kept);
* the worker stores a handler's traceback (file and line), also when the handler ran in a child
  process, stores its return value, and fails a job whose return value cannot be stored;
* the worker logs each lease at DEBUG and each retry or dead letter with its traceback.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import time
from pathlib import Path

import pytest

from forebay import Backoff, Forebay, Job, JobState, WorkerSettings
from forebay.app_reference import import_app
from forebay.backends.base import Backend
from forebay.execution.pool import HandlerPool
from forebay.job import MAX_TRACEBACK_BYTES, Completion, Failure, NewJob, Retry
from forebay.testing import drain

NO_WAIT = Backoff(base_s=0, jitter=False)


async def _lease_one(backend: Backend, queue: str = "q") -> Job:
    [job] = await backend.lease(queue=queue, limit=1, worker_id="w1", lease_s=30)
    return job


async def test_the_errors_history_keeps_the_last_ten_attempts_in_order(backend: Backend) -> None:
    [job] = await backend.enqueue([NewJob.create("q", {"n": 1})])
    for attempt in range(1, 13):
        leased = await _lease_one(backend)
        assert leased.attempt == attempt
        retry = Retry(leased.lease, time.time(), f"E{attempt}: no", f"E{attempt}", f"tb {attempt}")
        assert await backend.retry([retry]) == []
    leased = await _lease_one(backend)
    assert await backend.dead_letter([Failure(leased.lease, "Final: gone", "Final", None)]) == []
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.state is JobState.DEAD
    assert (stored.error, stored.error_type) == ("Final: gone", "Final")
    assert [e.attempt for e in stored.errors] == list(range(4, 14))
    assert [e.type for e in stored.errors] == [f"E{a}" for a in range(4, 13)] + ["Final"]
    assert [e.message for e in stored.errors][:2] == ["E4: no", "E5: no"]
    assert [e.traceback for e in stored.errors][-2:] == ["tb 12", None]
    times = [e.at for e in stored.errors]
    assert times == sorted(times) and stored.updated_at is not None
    assert abs((times[-1] - stored.updated_at).total_seconds()) < 5


async def test_a_long_traceback_is_capped_keeping_its_end(backend: Backend) -> None:
    [job] = await backend.enqueue([NewJob.create("q", None)])
    leased = await _lease_one(backend)
    frames = "".join(f'  File "handler.py", line {n}, in step\n' for n in range(2000))
    text = "Traceback (most recent call last):\n" + frames + "KeyError: 'missing ключ'"
    retry = Retry(leased.lease, time.time(), "KeyError", "KeyError", text)
    assert await backend.retry([retry]) == []
    stored = await backend.get_job(job.id)
    assert stored is not None
    [entry] = stored.errors
    assert entry.traceback is not None
    assert len(entry.traceback.encode()) <= MAX_TRACEBACK_BYTES
    assert entry.traceback.endswith("line 1999, in step\nKeyError: 'missing ключ'")
    assert entry.traceback.startswith("[") and "bytes cut from the start]" in entry.traceback


async def test_a_completion_stores_its_result_and_clears_the_last_error(backend: Backend) -> None:
    jobs = await backend.enqueue([NewJob.create("q", {"i": i}) for i in range(3)])
    first = await _lease_one(backend)
    assert await backend.retry([Retry(first.lease, time.time(), "Boom: x", "Boom", "tb")]) == []
    before = time.time()
    leased = await backend.lease(queue="q", limit=3, worker_id="w2", lease_s=30)
    assert sorted(j.id for j in leased) == [j.id for j in jobs]
    for job in leased:
        assert job.started_at is not None and job.started_at.timestamp() >= before - 1
    by_id = {j.id: j for j in leased}
    a, b, c = (by_id[j.id] for j in jobs)
    done = [Completion(a.lease, '{"rows":[1,2],"name":"é"}'), b.lease, Completion(c.lease)]
    assert await backend.complete(done) == []
    assert await backend.complete([Completion(a.lease, "1")]) == [a.id]  # refused: not held
    stored = {j.id: j for j in [await backend.get_job(j.id) for j in jobs] if j is not None}
    assert stored[a.id].result == {"rows": [1, 2], "name": "é"}
    assert stored[b.id].result is None and stored[c.id].result is None
    retried = stored[jobs[0].id]
    assert retried.state is JobState.COMPLETED
    assert (retried.error, retried.error_type) == (None, None)
    assert [(e.attempt, e.type, e.traceback) for e in retried.errors] == [(1, "Boom", "tb")]
    assert retried.started_at is not None and retried.finished_at is not None
    assert retried.started_at <= retried.finished_at


async def test_an_expired_lease_is_an_entry_of_the_history(backend: Backend) -> None:
    [job] = await backend.enqueue([NewJob.create("q", None)])
    await _lease_one(backend)
    assert await backend.reclaim_expired(now=time.time() + 60) == 1
    stored = await backend.get_job(job.id)
    assert stored is not None and stored.error_type == "LeaseExpired"
    [entry] = stored.errors
    assert (entry.attempt, entry.type, entry.traceback) == (1, "LeaseExpired", None)
    assert "lease expired" in entry.message


# -- through the worker ------------------------------------------------------------------------


def _fail_on_missing_key(payload: dict[str, object]) -> object:
    return payload["missing"]  # the line the tracebacks name


async def test_the_worker_stores_each_attempts_traceback_and_logs_it(
    app: Forebay, caplog: pytest.LogCaptureFixture
) -> None:
    @app.handler("docs", max_attempts=3, backoff=NO_WAIT, concurrency=2)
    async def handle(job: Job) -> object:
        await job.progress(10, "parsing")
        if job.payload["ok_on"] == job.attempt:  # type: ignore[index,call-overload]
            return {"done": job.attempt}
        return _fail_on_missing_key(job.payload)  # type: ignore[arg-type]

    dies = await app.enqueue("docs", {"ok_on": 0})
    heals = await app.enqueue("docs", {"ok_on": 2})
    with caplog.at_level(logging.DEBUG, logger="forebay.worker"):
        await drain(app)
    dead = await app.get_job(dies.id)
    assert dead.state is JobState.DEAD and dead.error == "KeyError: 'missing'"
    assert [e.attempt for e in dead.errors] == [1, 2, 3]
    line = _fail_on_missing_key.__code__.co_firstlineno + 1
    for entry in dead.errors:
        assert entry.type == "KeyError" and entry.message == "KeyError: 'missing'"
        assert entry.traceback is not None
        assert f'File "{__file__}", line {line}, in _fail_on_missing_key' in entry.traceback
        assert entry.traceback.endswith("KeyError: 'missing'")
    healed = await app.get_job(heals.id)
    assert healed.state is JobState.COMPLETED and healed.result == {"done": 2}
    assert (healed.error, healed.error_type) == (None, None)
    assert [e.attempt for e in healed.errors] == [1]

    records = [r for r in caplog.records if r.name == "forebay.worker"]
    life = [r.getMessage() for r in records if getattr(r, "job_id", None) == heals.id]
    steps = [m.split(" ", 3)[2] for m in life]
    # The retry line comes once the retry is written, by when the job may be leased again.
    retried = steps.index("retrying")
    assert retried >= 2 and steps[:2] == ["leased", "progress"]
    del steps[retried]
    assert steps == ["leased", "progress", "leased", "progress", "completed"]
    assert life[1] == f"job {heals.id} progress 10%: parsing"
    leases = [r.getMessage() for r in records if "leased by worker" in r.getMessage()]
    assert f"job {dies.id} leased by worker" in leases[0] or f"job {heals.id}" in leases[0]
    assert sum(f"job {dies.id} leased" in m for m in leases) == 3
    assert any(m.endswith("attempt 3, delivery 3") for m in leases)
    failed = [r for r in records if getattr(r, "outcome", None) in ("retry", "dead")]
    assert len(failed) == 4
    for record in failed:
        assert f"line {line}, in _fail_on_missing_key" in record.traceback  # type: ignore[attr-defined]


async def test_results_are_stored_and_bad_ones_fail_the_job_at_once(app: Forebay) -> None:
    @app.handler("calc", max_attempts=5, max_result_bytes=1000, concurrency=4)
    async def handle(job: Job) -> object:
        kind = job.payload["kind"]  # type: ignore[index,call-overload]
        if kind == "big":
            return "x" * 2000
        if kind == "set":
            return {1, 2}
        if kind == "none":
            return None
        return {"sum": 3, "items": [1, 2]}

    jobs = {k: await app.enqueue("calc", {"kind": k}) for k in ("big", "set", "none", "sum")}
    await drain(app)
    big = await app.get_job(jobs["big"].id)
    assert big.state is JobState.DEAD and big.error_type == "ResultTooLarge" and big.attempt == 1
    assert (
        big.error is not None and "2002 bytes" in big.error and "max_result_bytes=1000" in big.error
    )
    assert big.result is None
    odd = await app.get_job(jobs["set"].id)
    assert odd.state is JobState.DEAD and odd.error_type == "InvalidResult"
    assert odd.error is not None and "not JSON" in odd.error
    assert (await app.get_job(jobs["none"].id)).result is None
    done = await app.get_job(jobs["sum"].id)
    assert done.state is JobState.COMPLETED and done.result == {"sum": 3, "items": [1, 2]}
    assert done.started_at is not None and done.finished_at is not None
    assert done.to_dict()["result"] == {"sum": 3, "items": [1, 2]}


CHILD_APP = textwrap.dedent(
    """
    from forebay import Forebay

    app = Forebay()

    def parse(payload):
        return payload["missing"]

    @app.handler("remote", max_attempts=1, max_result_bytes=100)
    def handle(job):
        if job.payload.get("big"):
            return "y" * 500
        if job.payload.get("fail"):
            return parse(job.payload)
        return {"pid_seen": True, "echo": job.payload}
    """
)


async def test_a_child_process_handler_sends_its_traceback_and_result(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"diagnostics_app_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{module}.py").write_text(CHILD_APP)
    monkeypatch.chdir(tmp_path)  # the children import the app from the current folder
    app = import_app(f"{module}:app")
    app.use_url(url)
    pool = HandlerPool(f"{module}:app", processes=2, url=url)
    try:
        await app.open()
        fails = await app.enqueue("remote", {"fail": True})
        big = await app.enqueue("remote", {"big": True})
        fine = await app.enqueue("remote", {"n": 1})
        pool.start()
        worker = pool.worker(app, None, WorkerSettings(burst=True, handle_signals=False))
        await worker.run()
        dead = await app.get_job(fails.id)
        assert dead.state is JobState.DEAD and dead.error == "KeyError: 'missing'"
        [entry] = dead.errors
        assert entry.traceback is not None
        assert entry.traceback.startswith("Traceback (most recent call last):")  # the child's
        where = str(tmp_path / f"{module}.py")
        assert f'File "{where}", line 7, in parse' in entry.traceback
        assert f'File "{where}", line 14, in handle' in entry.traceback
        too_big = await app.get_job(big.id)
        assert too_big.error_type == "ResultTooLarge" and too_big.state is JobState.DEAD
        assert too_big.error is not None and "502 bytes" in too_big.error
        done = await app.get_job(fine.id)
        assert done.result == {"pid_seen": True, "echo": {"n": 1}}
    finally:
        await pool.stop()
        await app.open()
        await app.backend.drop_everything()
        await app.close()
        sys.modules.pop(module, None)
