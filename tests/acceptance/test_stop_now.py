"""A second SIGINT/SIGTERM during the shutdown grace stops at once: ``forebay worker`` and
``forebay serve`` release their running jobs (queued again, no attempt spent) instead of
waiting out the grace, and the first signal says how to do that.

The handlers block until a file the test never creates exists, so only the signals end them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forebay import JobState
from forebay.testing import wait_until
from tests.acceptance.test_cli import APP, Cli, _drop, wait_for_state
from tests.acceptance.test_serve import serve

GRACE_S = 300
"""Far longer than the test may take: only the second signal can end the grace in time."""
FIRST = "stopping: finishing running jobs (press Ctrl-C again to stop now)"

SERVICE_APP = """
import asyncio
from pathlib import Path

from forebay import Forebay

app = Forebay()


@app.handler("slow", concurrency=4)
async def slow(job):
    while not Path(job.payload["until"]).exists():
        await asyncio.sleep(0.02)
"""


class Lines:
    """Collects a process's stderr lines in a thread, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._thread.start()

    def wait_for(self, text: str) -> None:
        wait_until(lambda: any(text in line for line in self.lines), timeout_s=30, what=text)

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def _stopped_twice(process: subprocess.Popen[str], lines: Lines, sig: signal.Signals) -> float:
    """Send ``sig``, wait for the first-signal line, send it again; seconds until exit."""
    process.send_signal(sig)
    lines.wait_for(FIRST)
    started = time.monotonic()
    process.send_signal(sig)
    process.wait(timeout=60)
    return time.monotonic() - started


@pytest.fixture
def cli(url: str, tmp_path: Path) -> Iterator[Cli]:
    """The CLI in a folder with the test app, on a fresh store of each backend."""
    (tmp_path / "app.py").write_text(APP)
    yield Cli(tmp_path, url)
    if not url.startswith("sqlite"):
        asyncio.run(_drop(url))


def test_worker_second_signal_releases_running_jobs_at_once(cli: Cli, tmp_path: Path) -> None:
    assert cli.url is not None
    never = json.dumps({"until": str(tmp_path / "never")})
    ids = [cli.json("enqueue", "slow", never)["id"] for _ in range(2)]
    worker = cli.start("worker", "app:app", "--queue", "slow", "--shutdown-grace-s", str(GRACE_S))
    lines = Lines(worker)
    try:
        for job_id in ids:
            wait_for_state(cli.url, job_id, JobState.RUNNING)
        took = _stopped_twice(worker, lines, signal.SIGINT)
    finally:
        worker.kill()
        worker.wait()
        stderr = lines.text()
        for stream in (worker.stdout, worker.stderr):
            if stream is not None:
                stream.close()
    assert worker.returncode == 0, stderr
    assert took < 30, stderr
    assert "Traceback" not in stderr
    assert "stopping now: releasing its running jobs" in stderr
    for job_id in ids:
        released = cli.json("job", str(job_id))
        assert released["state"] == "queued", released
        assert released["attempt"] == 0  # nothing spent


def test_serve_second_signal_releases_running_jobs_at_once(tmp_path: Path) -> None:
    env = {"FOREBAY_SHUTDOWN_GRACE_S": str(GRACE_S)}
    with serve(tmp_path, env=env, app=SERVICE_APP) as server:
        never = {"until": str(tmp_path / "never")}
        posted = httpx.post(
            f"{server.base}/v1/queues/slow/jobs", json=[{"payload": never}, {"payload": never}]
        )
        assert posted.status_code == 201, posted.text
        ids = [job["id"] for job in posted.json()]

        def running() -> bool:
            states = [httpx.get(f"{server.base}/v1/jobs/{i}").json()["state"] for i in ids]
            return states == ["running", "running"]

        wait_until(running, timeout_s=30, what="both jobs running")
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: FIRST in server.output(), timeout_s=30, what=FIRST)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=60)
        took = time.monotonic() - started
        assert server.proc.returncode == 0, server.output()[-3000:]
        assert took < 30, server.output()[-3000:]
        assert "stopping now: releasing its running jobs" in server.output()

    released = Cli(tmp_path, f"sqlite:///{server.db}")
    for job_id in ids:
        job = released.json("job", str(job_id))
        assert (job["state"], job["attempt"]) == ("queued", 0), job
