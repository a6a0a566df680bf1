"""``app.command(...)``: queues whose jobs run real programs (tests/scripts/command/).

* a run reads its payload on stdin, sees its job in the environment, reports progress while it
  runs and answers with its last JSON line (on every backend); 20 000 progress lines make a
  few writes, the last value kept;
* a program printing 50 MB (and 10 MB of stderr) is drained, its logged output capped with a
  marker, the job completes, and this process's memory stays flat;
* past ``timeout_s`` a program that ignores SIGTERM is killed after the grace (a transient
  timeout); a grandchild left behind dies with its group; a kill for memory is
  ``ResourceExhausted``, retried and counted apart; a permanent exit code is dead at once; an
  operator's cancel and a worker's shutdown end the whole group before the call ends; a result
  line too long, or a program that cannot start, is dead at once;
* with handler processes, a command still runs from the worker's own process.

Programs tell the test what they do through files the test polls, and a held program waits on
a FIFO the test opens when it is time: nothing here sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from forebay import Backoff, Forebay, Job, JobState
from forebay.execution.pool import HandlerPool
from forebay.metrics import Metrics, PrometheusObserver
from forebay.observer import Observer
from forebay.outcome import JobOutcome
from forebay.testing import Settled, drain, until
from forebay.worker import WorkerSettings

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "command"
NO_SIGNALS = WorkerSettings(handle_signals=False)


def _script(name: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / name)]


def _app(tmp_path: Path, *observers: Observer) -> Forebay:
    return Forebay(f"sqlite:///{tmp_path / 'store.db'}", observers=observers)


def _gone(pid: int) -> bool:
    """The process no longer runs (a zombie nobody reaped yet is not running)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _pids(marks: Path) -> list[int]:
    return [int(p) for p in marks.read_text().split()] if marks.exists() else []


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the programs write what they did (``$MARKS``)."""
    path = tmp_path / "marks"
    monkeypatch.setenv("MARKS", str(path))
    return path


async def test_a_run_gets_its_payload_and_job_reports_progress_and_answers(
    app: Forebay, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    os.mkfifo(go)
    app.command(
        "ingest", _script("report.py"), env={"EXTRA_SETTING": "on"}, cwd=tmp_path, timeout_s=30
    )
    job = await app.enqueue("ingest", {"doc": "a.pdf", "hold": str(go)})
    worker = asyncio.create_task(drain(app))

    async def halfway() -> bool:
        seen = await app.get_job(job.id)
        return seen.progress_pct == 40 and seen.progress_message == "halfway"

    await until(halfway, what="progress 40 % recorded while the program runs")
    running = await app.get_job(job.id)
    assert running.state is JobState.RUNNING
    writer = await asyncio.to_thread(os.open, go, os.O_WRONLY)  # the program goes on
    os.close(writer)
    await worker

    done = await app.get_job(job.id)
    assert done.state is JobState.COMPLETED
    assert done.progress_message == "writing"  # the last progress, written before the end
    result = done.result
    assert isinstance(result, dict)
    assert result["doc"] == "a.pdf"
    assert result["env"] == {
        "FOREBAY_JOB_ID": str(job.id),
        "FOREBAY_ATTEMPT": "1",
        "FOREBAY_QUEUE": "ingest",
        "EXTRA_SETTING": "on",
    }
    assert result["cwd"] == str(tmp_path)
    assert result["ppid"] == os.getpid()  # run from the worker's own process


async def test_a_flood_of_output_is_capped_and_memory_stays_flat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="forebay.command")
    app = _app(tmp_path)
    app.command("flood", _script("flood.py"), timeout_s=60)  # max_output_bytes: 1 MiB
    async with app:
        warm = await app.enqueue("flood", {"stdout_mb": 1, "stderr_mb": 1})
        await drain(app)  # imports and first allocations happen here, not in the measure
        assert (await app.get_job(warm.id)).state is JobState.COMPLETED
        me = psutil.Process()
        before = me.memory_info().rss
        peak = before
        flooded = asyncio.Event()

        async def sample() -> None:  # measures; it synchronises nothing
            nonlocal peak
            while not flooded.is_set():
                peak = max(peak, me.memory_info().rss)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        job = await app.enqueue("flood", {"stdout_mb": 50, "stderr_mb": 10})
        await drain(app)
        flooded.set()
        await sampler

        done = await app.get_job(job.id)
    assert done.state is JobState.COMPLETED
    assert done.result == {"flooded": 50}
    assert peak - before < 20 * 2**20, f"the worker grew by {(peak - before) / 2**20:.1f} MB"
    markers = [r.getMessage() for r in caplog.records if r.job_id == job.id]  # type: ignore[attr-defined]
    assert (
        f"job {job.id} stdout: [more than max_output_bytes=1048576 bytes; the rest is dropped]"
        in markers
    )
    assert (
        f"job {job.id} stderr: [more than max_output_bytes=1048576 bytes; the rest is dropped]"
        in markers
    )
    dropped = {m.split(": [")[0]: m for m in markers if "bytes dropped" in m}
    assert set(dropped) == {f"job {job.id} stdout", f"job {job.id} stderr"}


async def test_past_its_timeout_a_program_that_ignores_sigterm_is_killed(
    tmp_path: Path, marks: Path
) -> None:
    app = _app(tmp_path)
    app.command(
        "slow",
        _script("stubborn.py"),
        timeout_s=1.5,
        term_grace_s=0.3,
        max_attempts=2,
        backoff=Backoff.fixed(3600),
    )
    async with app:
        job = await app.enqueue("slow", None)
        started = time.monotonic()
        await drain(app)
        took = time.monotonic() - started
        seen = await app.get_job(job.id)
    lines = marks.read_text().splitlines()
    pid = int(lines[0].split()[1])
    assert lines[1:] == ["SIGTERM ignored"]
    assert _gone(pid)
    assert took >= 1.5 + 0.3
    assert seen.state is JobState.QUEUED  # transient: retried after its backoff
    assert seen.error_type == "TimeoutError"
    assert seen.error is not None and "timeout_s=1.5" in seen.error


async def test_a_grandchild_left_behind_dies_with_its_group(tmp_path: Path, marks: Path) -> None:
    app = _app(tmp_path)
    app.command("fork", _script("forker.py"), term_grace_s=0.2, timeout_s=30)
    async with app:
        job = await app.enqueue("fork", "exit")
        await drain(app)
        done = await app.get_job(job.id)
    parent, grandchild = _pids(marks)
    assert done.state is JobState.COMPLETED
    assert done.result == {"left_behind": grandchild}
    assert _gone(parent) and _gone(grandchild)  # it ignored SIGTERM: SIGKILL ended it


async def test_a_kill_for_memory_is_resource_exhausted_retried_and_counted_apart(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    app = _app(tmp_path, PrometheusObserver(metrics))
    app.command("hog", _script("hog.py"), max_attempts=2, backoff=Backoff.fixed(0), timeout_s=30)
    async with app:
        job = await app.enqueue("hog", None)
        await drain(app)
        dead = await app.get_job(job.id)
    assert dead.state is JobState.DEAD
    assert dead.attempt == 2  # retried once, then out of attempts
    assert [e.type for e in dead.errors] == ["ResourceExhausted", "ResourceExhausted"]
    assert dead.error is not None
    assert "killed by SIGKILL" in dead.error and "out of memory under RLIMIT_AS" in dead.error
    counted = metrics.registry.get_sample_value
    labels = {"queue": "hog"}
    for outcome in ("retried", "dead"):
        assert counted("forebay_jobs_resource_exhausted_total", labels | {"outcome": outcome}) == 1
    assert counted("forebay_jobs_retried_total", labels) == 1


async def test_exit_codes_permanent_dead_at_once_others_retried(tmp_path: Path) -> None:
    settled = Settled()
    app = _app(tmp_path, settled)
    failures: list[tuple[int, str]] = []

    async def on_failure(job: Job, error: BaseException) -> None:
        failures.append((job.id, type(error).__name__))

    app.command(
        "exits",
        _script("fail.py"),
        permanent_exit_codes=[3],
        max_attempts=5,
        backoff=Backoff.fixed(3600),
        timeout_s=30,
        on_failure=on_failure,
    )
    async with app:
        permanent = await app.enqueue("exits", 3)
        transient = await app.enqueue("exits", 4)
        await drain(app)
        dead = await app.get_job(permanent.id)
        retrying = await app.get_job(transient.id)
    assert dict(settled.outcomes) == {
        permanent.id: JobOutcome.DEAD,
        transient.id: JobOutcome.RETRIED,
    }
    # a command queue's hooks are a handler queue's: one per failed attempt
    assert sorted(failures) == [(permanent.id, "PermanentError"), (transient.id, "TransientError")]
    assert dead.attempt == 1
    assert dead.error_type == "PermanentError"
    assert retrying.error_type == "TransientError"
    for job, status in ((dead, 3), (retrying, 4)):
        assert job.error is not None
        assert f"exited with status {status}" in job.error
        assert job.error.endswith(f"the last line: exiting with {status}")
        assert "early line" not in job.error  # only the last 1000 characters of stderr
        tail = job.error.split("stderr ends with:\n", 1)[1]
        assert len(tail) == 1000


@pytest.fixture
def held(tmp_path: Path, marks: Path) -> Iterator[Forebay]:
    """An app whose ``fork`` jobs sleep with a grandchild that ignores SIGTERM."""
    app = _app(tmp_path)
    app.command("fork", _script("forker.py"), term_grace_s=0.2, lease_s=0.6, timeout_s=60)
    yield app


async def _running_group(marks: Path) -> tuple[int, int]:
    await until(lambda: len(_pids(marks)) == 2, what="the program and its grandchild")
    parent, grandchild = _pids(marks)
    return parent, grandchild


async def test_cancelling_a_running_job_ends_its_whole_group(held: Forebay, marks: Path) -> None:
    async with held:
        job = await held.enqueue("fork", "sleep")
        worker = asyncio.create_task(drain(held))
        parent, grandchild = await _running_group(marks)
        assert await held.cancel(job.id) == [job.id]
        await worker  # the call ends only once the group is gone
        assert _gone(parent) and _gone(grandchild)
        assert (await held.get_job(job.id)).state is JobState.CANCELLED


async def test_a_worker_shutting_down_ends_the_group_and_releases_the_job(
    held: Forebay, marks: Path
) -> None:
    async with held:
        job = await held.enqueue("fork", "sleep")
        worker = held.worker(settings=WorkerSettings(handle_signals=False, shutdown_grace_s=0))
        running = asyncio.create_task(worker.run())
        parent, grandchild = await _running_group(marks)
        worker.stop()
        await running
        assert _gone(parent) and _gone(grandchild)
        released = await held.get_job(job.id)
    assert released.state is JobState.QUEUED
    assert released.attempt == 0  # given back: no attempt spent


async def test_with_handler_processes_a_command_runs_from_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    (tmp_path / "command_app.py").write_text(
        "import sys\n"
        "from forebay import Forebay\n"
        f"app = Forebay({url!r})\n"
        f"app.command('ingest', [sys.executable, {str(SCRIPTS / 'report.py')!r}])\n"
        "@app.handler('plain')\n"
        "async def plain(job):\n"
        "    import os\n"
        "    return os.getpid()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    from command_app import app  # type: ignore[import-not-found]

    pool = HandlerPool("command_app:app", processes=1, url=url)
    async with app:
        command = await app.enqueue("ingest", {"doc": "b.pdf"})
        plain = await app.enqueue("plain", None)
        pool.start()
        try:
            await pool.worker(app, None, replace(NO_SIGNALS, burst=True)).run()
        finally:
            await pool.stop()
        ran = await app.get_job(command.id)
        other = await app.get_job(plain.id)
    assert isinstance(ran.result, dict) and ran.result["ppid"] == os.getpid()
    assert other.result != os.getpid()  # the plain handler ran in the handler process


async def test_a_result_line_too_long_or_a_program_that_cannot_start_is_dead(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    big = "import json; print(json.dumps({'text': 'x' * 2000})); print('not JSON')"
    app.command("big", [sys.executable, "-c", big], max_result_bytes=1000, timeout_s=30)
    app.command("missing", [str(tmp_path / "no-such-program")], timeout_s=30)
    async with app:
        too_long = await app.enqueue("big", None)
        missing = await app.enqueue("missing", None)
        await drain(app)
        dead = [await app.get_job(too_long.id), await app.get_job(missing.id)]
    assert [(job.state, job.attempt, job.error_type) for job in dead] == [
        (JobState.DEAD, 1, "ResultTooLarge"),
        (JobState.DEAD, 1, "PermanentError"),
    ]
    assert dead[1].error is not None and "no-such-program" in dead[1].error


async def test_progress_writes_are_rate_limited_and_the_last_value_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tmp_path)
    chatty = "for i in range(20001): print(f'PROGRESS: {i / 200:g} step {i}')"
    app.command("chatty", [sys.executable, "-c", chatty], timeout_s=30)
    async with app:
        writes: list[float] = []
        record = app.backend.progress

        async def counted(lease: object, *, pct: float, message: str | None) -> None:
            writes.append(pct)
            await record(lease, pct=pct, message=message)  # type: ignore[arg-type]

        monkeypatch.setattr(app.backend, "progress", counted)
        job = await app.enqueue("chatty", None)
        started = time.monotonic()
        await drain(app)
        took = time.monotonic() - started
        done = await app.get_job(job.id)
    assert done.state is JobState.COMPLETED
    assert done.progress_message == "step 20000"
    assert writes[-1] == 100
    assert len(writes) <= 2 + took / 0.5, f"{len(writes)} progress writes in {took:.2f}s"
