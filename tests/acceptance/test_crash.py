"""Crash test: a worker process is SIGKILLed in the middle of jobs; another finishes them.

Every job completes, and none takes effect twice: the handler writes its effect idempotently
by the job's key (as forebay's sinks do) and also logs every execution, so the test sees both
the redeliveries (at-least-once) and the single effect per key (exactly-once effect).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from forebay import Forebay, JobFilter, JobState
from forebay.backends import Backend
from forebay.testing import wait_until

N_JOBS = 60

APP = textwrap.dedent(
    """
    import asyncio, os, sqlite3
    from forebay import Forebay, WorkerSettings

    app = Forebay()
    EFFECTS = os.environ["EFFECTS_DB"]

    def record(key, pid):
        conn = sqlite3.connect(EFFECTS, timeout=30)
        with conn:
            conn.execute("INSERT INTO runs (key, pid) VALUES (?, ?)", (key, pid))
            conn.execute("INSERT INTO effects (key) VALUES (?) ON CONFLICT DO NOTHING", (key,))
        conn.close()

    @app.handler("crash", lease_s=1.0, concurrency=4, max_attempts=3)
    async def handle(job):
        await asyncio.sleep(0.05)  # the work itself: slow enough to be killed in the middle
        await asyncio.to_thread(record, job.key, os.getpid())

    if __name__ == "__main__":
        asyncio.run(app.run_worker(settings=WorkerSettings(reclaim_every_s=0.2)))
    """
)


def _effects_db(path: Path) -> Path:
    db = path / "effects.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE runs (key TEXT, pid INTEGER)")
    conn.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    conn.commit()
    conn.close()
    return db


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def test_killed_worker_jobs_complete_once_in_effect(
    url: str, backend: Backend, tmp_path: Path
) -> None:
    app_file = tmp_path / "crashapp.py"
    app_file.write_text(APP)
    effects = _effects_db(tmp_path)
    env = {
        **os.environ,
        "FOREBAY_URL": url,
        "EFFECTS_DB": str(effects),
        "PYTHONPATH": str(tmp_path),
    }

    producer = Forebay(url)
    jobs = [await producer.enqueue("crash", {"i": i}, key=f"doc-{i}") for i in range(N_JOBS)]
    await producer.close()

    first = subprocess.Popen([sys.executable, str(app_file)], env=env, cwd=tmp_path)
    try:
        # Kill it while it is in the middle: some effects done, jobs still running.
        wait_until(
            lambda: _count(effects, "SELECT COUNT(*) FROM effects") >= 8,
            timeout_s=60,
            what="first effects",
            process=first,
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    done_by_first = _count(effects, "SELECT COUNT(*) FROM effects")
    assert done_by_first < N_JOBS, "the first worker finished everything before it was killed"
    running = await backend.list_jobs(JobFilter(state=JobState.RUNNING, queue="crash"), limit=1000)
    assert running, "no job was running when the worker was killed"

    second = subprocess.Popen([sys.executable, str(app_file)], env=env, cwd=tmp_path)
    try:
        wait_until(
            lambda: _count(effects, "SELECT COUNT(*) FROM effects") >= N_JOBS,
            timeout_s=120,
            what="all effects",
            process=second,
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0  # graceful exit
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    for job in jobs:
        stored = await backend.get_job(job.id)
        assert stored is not None and stored.state is JobState.COMPLETED, stored
    assert _count(effects, "SELECT COUNT(*) FROM effects") == N_JOBS
    # the killed worker's unfinished jobs ran again (at-least-once) ...
    assert _count(effects, "SELECT COUNT(DISTINCT pid) FROM runs") == 2
    # ... and every run beyond one per key is a redelivery, not a lost or extra effect
    assert _count(effects, "SELECT COUNT(DISTINCT key) FROM runs") == N_JOBS
    redelivered = [j for j in running if (await backend.get_job(j.id)).deliveries >= 2]  # type: ignore[union-attr]
    assert redelivered, "jobs held by the killed worker were not redelivered"
