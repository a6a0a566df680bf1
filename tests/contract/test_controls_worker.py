"""Operator controls reaching running workers, on every backend: a paused queue stops every
worker within a second and a resumed one starts them again; a cancelled running job's handler
is stopped — an ``async def`` one cancelled, a ``def`` one told through ``job.cancel_requested``,
one in a handler process cancelled there or, for a thread, its process terminated — and the job
ends ``cancelled``, never run again."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from forebay import Forebay, Job, JobState, WorkerSettings
from forebay.execution.pool import HandlerPool
from forebay.testing import until
from tests.contract.workers import running

FAST = WorkerSettings(handle_signals=False, idle_poll_s=0.2, shutdown_grace_s=5)


async def state_of(app: Forebay, job_id: int) -> JobState:
    return (await app.get_job(job_id)).state


# -- pause / resume ---------------------------------------------------------------------------
async def test_pause_stops_two_workers_within_a_second_and_resume_restarts_them(
    url: str, app: Forebay
) -> None:
    other = Forebay(url)  # a second process's app on the same store
    seen: list[tuple[str, int]] = []

    for name, each in (("one", app), ("two", other)):

        def declare(name: str = name, each: Forebay = each) -> None:
            @each.handler("docs", concurrency=2)
            async def handle(job: Job) -> None:
                seen.append((name, job.id))

        declare()
    try:
        async with running(app.worker(settings=FAST)), running(other.worker(settings=FAST)):
            await app.enqueue("docs", {})
            await until(lambda: len(seen) == 1)
            await app.pause("docs")
            paused_at = time.monotonic()
            jobs = [await other.enqueue("docs", {"i": i}) for i in range(6)]  # still accepted
            # neither worker leases them; a lease started before the pause is the only one
            # that could still land, within a second
            # An observation window, not a synchronisation: the promise is "nothing leased for
            # as long as it is paused", and each idle worker leases again every 0.2 s.
            await asyncio.sleep(1.0)
            after_pause = len(seen)
            assert after_pause == 1, f"leased while paused: {seen}"
            assert [await state_of(app, j.id) for j in jobs] == [JobState.QUEUED] * 6
            assert (await app.queue_settings())["docs"].paused
            await other.resume("docs")
            resumed = time.monotonic()
            await until(lambda: len(seen) == 7, timeout_s=10)
            assert time.monotonic() - resumed < 1.5
            assert resumed - paused_at >= 1.0
            assert {name for name, _ in seen[1:]} <= {"one", "two"}
    finally:
        await other.close()


# -- cancel a running job ---------------------------------------------------------------------
async def test_cancel_stops_a_running_async_handler(app: Forebay) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    @app.handler("docs", lease_s=0.3)
    async def handle(job: Job) -> None:
        if job.payload["keep"]:  # type: ignore[index,call-overload]
            return
        started.set()
        try:
            await asyncio.Event().wait()  # works until stopped
        except asyncio.CancelledError:
            stopped.set()
            raise

    keep = await app.enqueue("docs", {"keep": True})
    async with running(app.worker(settings=FAST)) as worker:
        job = await app.enqueue("docs", {"keep": False})
        await asyncio.wait_for(started.wait(), 10)
        assert await app.cancel(job.id) == [job.id]
        await asyncio.wait_for(stopped.wait(), 5)  # within a heartbeat (0.1 s)
        assert await state_of(app, job.id) is JobState.CANCELLED
        await until(lambda: worker.processed == 1)  # the other job completes
    assert await state_of(app, job.id) is JobState.CANCELLED
    assert await state_of(app, keep.id) is JobState.COMPLETED
    assert worker.processed == 1  # the cancelled job is not settled again by the worker


async def test_cancel_tells_a_running_def_handler_through_its_flag(app: Forebay) -> None:
    started, saw_flag = threading.Event(), threading.Event()
    release = threading.Event()

    @app.handler("docs", lease_s=0.3)
    def handle(job: Job) -> str:
        started.set()
        deadline = time.monotonic() + 30  # bounded: a failing test must not hang
        while not job.cancel_requested and time.monotonic() < deadline:  # polls the flag
            if release.wait(0.01):
                break
        if job.cancel_requested:
            saw_flag.set()
        return "late"

    async with running(app.worker(settings=FAST)):
        job = await app.enqueue("docs", {})
        await asyncio.to_thread(started.wait, 10)
        assert await app.cancel(job.id) == [job.id]
        assert await asyncio.to_thread(saw_flag.wait, 5)
    release.set()
    stored = await app.get_job(job.id)
    assert stored.state is JobState.CANCELLED and stored.attempt == 1


CHILD_APP = """
import asyncio, os, pathlib, time
from forebay import Forebay

app = Forebay()
marks = pathlib.Path(os.environ["MARKS"])


def mark(name, text):
    # written whole, then renamed: a reader that sees the file sees all of it
    part = marks / (name + ".part")
    part.write_text(text)
    os.replace(part, marks / name)


@app.handler("threads", lease_s=0.3)
def in_thread(job):
    mark(f"{job.id}.pid", str(os.getpid()))
    while True:  # never polls the flag: only terminating its process stops it
        time.sleep(0.05)

@app.handler("tasks", lease_s=0.3)
async def in_task(job):
    mark(f"{job.id}.pid", str(os.getpid()))
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        mark(f"{job.id}.stopped", "cancelled")
        raise
"""


@pytest.fixture
def child_app(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Forebay]:
    (tmp_path / "controls_child_app.py").write_text(textwrap.dedent(CHILD_APP))
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("MARKS", str(marks))
    monkeypatch.setenv("FOREBAY_URL", url)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + ":" + ":".join(sys.path))
    monkeypatch.syspath_prepend(str(tmp_path))

    def load() -> Forebay:
        sys.modules.pop("controls_child_app", None)  # one app per test: its own store
        module = importlib.import_module("controls_child_app")
        return module.app  # type: ignore[no-any-return]

    return load


async def test_cancel_terminates_a_handler_process_running_a_thread(
    tmp_path: Path, child_app: Callable[[], Forebay]
) -> None:
    app = child_app()
    pool = HandlerPool("controls_child_app:app", processes=1)
    pool.start()
    try:
        async with running(pool.worker(app, ["threads", "tasks"], FAST)):
            job = await app.enqueue("threads", {})
            pid_file = tmp_path / "marks" / f"{job.id}.pid"
            await until(pid_file.exists, timeout_s=30)
            pid = int(pid_file.read_text())
            await app.cancel(job.id)
            await until(lambda: not psutil.pid_exists(pid) or _zombie(pid), timeout_s=10)
            assert await state_of(app, job.id) is JobState.CANCELLED
            # the pool starts a new process, and work goes on
            later = await app.enqueue("tasks", {})
            await until((tmp_path / "marks" / f"{later.id}.pid").exists, timeout_s=30)
            await app.cancel(later.id)
            await until((tmp_path / "marks" / f"{later.id}.stopped").exists, timeout_s=10)
            new_pid = int((tmp_path / "marks" / f"{later.id}.pid").read_text())
            assert new_pid != pid and psutil.pid_exists(new_pid)  # async: only the call stops
    finally:
        await pool.stop()
        await app.close()


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
