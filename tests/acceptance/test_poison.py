"""A poison job (its handler kills the worker process) is quarantined; its neighbours are not.

One job in the queue kills its worker (as a segfaulting parser would) whenever it runs. The jobs
that were running beside it when it did die with the worker through no fault of their own; after
the crash they run alone, one at a time, so only the job that kills a worker by itself runs up
its crash deliveries and ends dead as a crash loop. A supervisor restarts ``forebay worker``
whenever it dies, as systemd or Kubernetes would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from forebay import Forebay, JobFilter, JobState
from forebay.backends import Backend

N_GOOD = 40

APP = textwrap.dedent(
    """
    import asyncio, os, signal
    from forebay import Forebay

    app = Forebay()

    @app.handler("parse", lease_s=1.0, concurrency=8, max_attempts=1, max_deliveries=2)
    async def parse(job):
        if job.payload.get("poison"):
            os.kill(os.getpid(), signal.SIGKILL)  # what a segfault in a parser does
        await asyncio.sleep(0.2)  # long enough for the poison to run while these do
    """
)


def _start(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "forebay", "worker", "poisonapp:app", "--log-level", "warning"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _finished(backend: Backend) -> int:
    counts = {c.queue: c for c in await backend.counts()}
    c = counts.get("parse")
    return 0 if c is None else c.completed + c.dead + c.cancelled


async def test_a_poison_job_dead_letters_alone(url: str, backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "poisonapp.py").write_text(APP)
    env = {**os.environ, "FOREBAY_URL": url, "PYTHONPATH": str(tmp_path)}
    producer = Forebay(url)
    payloads = [{"i": i} for i in range(N_GOOD)]
    payloads.insert(3, {"poison": True})  # leased in the first batch, beside 7 good jobs
    jobs = [await producer.enqueue("parse", p) for p in payloads]
    await producer.close()

    crashes = 0
    worker = _start(tmp_path, env)
    deadline = time.monotonic() + 120
    try:
        while await _finished(backend) < len(jobs):
            assert time.monotonic() < deadline, "the queue did not drain"
            if worker.poll() is not None:  # the supervisor: restart a dead worker
                crashes += 1
                worker = _start(tmp_path, env)
            time.sleep(0.05)
    finally:
        worker.kill()
        worker.wait()

    poison = jobs[3]
    stored = [await backend.get_job(j.id) for j in jobs]
    dead = [j for j in stored if j is not None and j.state is JobState.DEAD]
    assert [j.id for j in dead] == [poison.id], [(j.id, j.error) for j in dead]
    assert dead[0].error_type == "CrashLoop"
    completed = await backend.list_jobs(JobFilter(queue="parse", state=JobState.COMPLETED))
    assert len(completed) == N_GOOD
    # the poison ran (and killed a worker) once beside others, then alone up to max_deliveries
    assert crashes == 2


POOL_APP = textwrap.dedent(
    """
    import asyncio, os, signal
    from forebay import Forebay

    app = Forebay()

    @app.handler("parse", lease_s=1.0, concurrency=4, max_attempts=1, max_deliveries=2)
    async def parse(job):
        if job.payload.get("poison"):
            os.kill(os.getpid(), signal.SIGKILL)  # kills the handler process, not the service
        await asyncio.sleep(0.2)
    """
)


def test_a_poison_job_in_a_handler_process_dead_letters_alone(tmp_path: Path) -> None:
    # The service's worker survives; the handler process the poison ran in dies with the calls
    # beside it. Those calls are crashes, not errors of their jobs: with max_attempts=1 an
    # error would dead-letter them at once.
    from tests.acceptance.test_serve import serve, wait_until

    env = {"FOREBAY_WORKER_PROCESSES": "1"}
    with serve(tmp_path, env=env, app=POOL_APP) as server:
        payloads: list[dict[str, object]] = [{"i": i} for i in range(12)]
        payloads.insert(1, {"poison": True})
        ids = []
        for payload in payloads:
            posted = httpx.post(f"{server.base}/v1/queues/parse/jobs", json={"payload": payload})
            assert posted.status_code == 201, posted.text
            ids.append(posted.json()["id"])

        def states() -> dict[int, dict[str, object]]:
            return {i: httpx.get(f"{server.base}/v1/jobs/{i}").json() for i in ids}

        wait_until(
            lambda: all(j["state"] in ("completed", "dead") for j in states().values()),
            90,
            "every job to finish",
            server,
        )
        final = states()
    dead = {i: j for i, j in final.items() if j["state"] == "dead"}
    assert list(dead) == [ids[1]], dead
    assert dead[ids[1]]["error_type"] == "CrashLoop"
    assert "Traceback" not in server.output()
