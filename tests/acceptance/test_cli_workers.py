"""``forebay workers`` against real ``forebay worker`` processes, on every backend.

Two worker processes of one app consume different queues; ``forebay workers --json`` lists both
with their host, pid, queues, concurrency and the jobs each completed, and per queue how many
consume it. A worker stopped with SIGTERM is gone at once; one killed with SIGKILL stays listed
(nothing removed its record) until its ttl has passed, then drops out by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from forebay import Forebay
from forebay.testing import until
from tests.servers import BACKENDS, backend_url

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    from forebay import Forebay

    app = Forebay()  # FOREBAY_URL, set by the test

    @app.handler("docs", concurrency=3)
    async def docs(job):
        pass

    @app.handler("pages", concurrency=2)
    async def pages(job):
        pass
    """
)

pytestmark = pytest.mark.slow


def _env(folder: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOREBAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(folder)])
    env["FOREBAY_URL"] = url
    env["FOREBAY_REGISTRY_EVERY_S"] = "0.2"  # counts show up fast; the ttl stays 15 s
    return env


def _start(folder: Path, url: str, queue: str) -> subprocess.Popen[bytes]:
    with open(folder / f"worker-{queue}.log", "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "forebay", "worker", "fleetapp:app", "--queue", queue],
            cwd=folder,
            env=_env(folder, url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def _workers(folder: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "forebay", "workers", "--app", "fleetapp:app", *args],
        cwd=folder,
        env=_env(folder, url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def _burst(folder: Path, env: dict[str, str], app: str) -> subprocess.CompletedProcess[str]:
    """``forebay worker APP --burst`` run to its end in ``folder``."""
    return subprocess.run(
        [sys.executable, "-m", "forebay", "worker", app, "--burst"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fleet(folder: Path, url: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(_workers(folder, url, "--json").stdout)
    return body


async def _completed(app: Forebay, expected: dict[int, int]) -> bool:
    """Every worker process (by pid) is listed, having completed as many jobs as expected."""
    return {w.pid: w.completed for w in await app.list_workers()} == expected


async def _pids(app: Forebay) -> set[int]:
    return {w.pid for w in await app.list_workers()}


@pytest.mark.parametrize("kind", BACKENDS)
async def test_forebay_workers_lists_two_worker_processes_until_they_are_gone(
    kind: str, tmp_path: Path
) -> None:
    (tmp_path / "fleetapp.py").write_text(APP)
    url = backend_url(kind, tmp_path)
    app = Forebay(url)
    await app.open()  # the store exists before the workers and the CLI look at it
    docs, pages = _start(tmp_path, url, "docs"), _start(tmp_path, url, "pages")
    try:
        for queue, n in (("docs", 3), ("pages", 2)):
            for i in range(n):
                await app.enqueue(queue, {"i": i})
        await until(
            lambda: _completed(app, {docs.pid: 3, pages.pid: 2}),
            timeout_s=60,
            interval_s=0.1,
            what=f"{kind}: both workers listed with their counts",
        )
        fleet = _fleet(tmp_path, url)
        rows = {w["pid"]: w for w in fleet["workers"]}
        assert set(rows) == {docs.pid, pages.pid}
        for pid, queue, concurrency, completed in (
            (docs.pid, "docs", 3, 3),
            (pages.pid, "pages", 2, 2),
        ):
            row = rows[pid]
            assert row["host"] == socket.gethostname()
            assert row["id"].startswith(f"{socket.gethostname()}:{pid}:")
            assert (row["queues"], row["concurrency"]) == ([queue], concurrency)
            assert (row["completed"], row["failed"], row["running"]) == (completed, 0, 0)
            assert row["stopping"] is False
        assert fleet["queues"] == [
            {"queue": "docs", "workers": 1, "concurrency": 3},
            {"queue": "pages", "workers": 1, "concurrency": 2},
        ]
        table = _workers(tmp_path, url).stdout
        assert str(docs.pid) in table and str(pages.pid) in table
        assert "no live worker" not in table

        # Killed: no goodbye, so its record stays until its ttl has passed.
        pages.send_signal(signal.SIGKILL)
        pages.wait(30)
        # Stopped: it removes its record as it exits.
        docs.send_signal(signal.SIGTERM)
        assert docs.wait(60) == 0
        fleet = _fleet(tmp_path, url)
        [left] = fleet["workers"]
        assert left["pid"] == pages.pid
        assert fleet["queues"][0] == {"queue": "docs", "workers": 0, "concurrency": 0}
        await until(
            lambda: _pids_gone(app),
            timeout_s=45,  # a 15 s ttl from the killed worker's last beat
            interval_s=0.5,
            what=f"{kind}: the killed worker dropping out",
        )
        fleet = _fleet(tmp_path, url)
        assert fleet["workers"] == []
        assert [q["workers"] for q in fleet["queues"]] == [0, 0]
        assert "no live worker" in _workers(tmp_path, url).stdout
    finally:
        for process in (docs, pages):
            if process.poll() is None:
                process.kill()
                process.wait(30)
        await app.backend.drop_everything()
        await app.close()
    for queue in ("docs", "pages"):
        assert "Traceback" not in (tmp_path / f"worker-{queue}.log").read_text(errors="replace")


async def _pids_gone(app: Forebay) -> bool:
    return not await _pids(app)


def test_a_worker_logs_json_lines_when_told_by_its_environment(tmp_path: Path) -> None:
    (tmp_path / "fleetapp.py").write_text(APP)
    url = backend_url("sqlite", tmp_path)
    env = _env(tmp_path, url) | {"FOREBAY_LOG_FORMAT": "json"}
    done = _burst(tmp_path, env, "fleetapp:app")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    messages = [line["message"] for line in lines]
    assert any("started on queues" in m for m in messages)
    assert any("stopped after 0 jobs" in m for m in messages)
    assert {line["logger"] for line in lines} >= {"forebay.worker"}

    env["FOREBAY_LOG_FORMAT"] = "xml"
    refused = _burst(tmp_path, env, "fleetapp:app")
    assert refused.returncode == 2 and "--log-format must be text or json" in refused.stderr


GC_APP = """
import gc
from forebay import Forebay

app = Forebay()

@app.handler("gc")
async def threshold(job):
    return {"gen0": gc.get_threshold()[0], "frozen": gc.get_freeze_count() > 0}
"""


async def test_a_worker_process_tunes_its_garbage_collector_as_serve_does(
    tmp_path: Path,
) -> None:
    """A standalone worker makes as many short-lived objects per job as the service: it
    freezes its start-up heap and raises the first threshold too (forebay.execution.tuning)."""
    from forebay.execution.tuning import GEN0_THRESHOLD

    (tmp_path / "gcapp.py").write_text(GC_APP)
    url = backend_url("sqlite", tmp_path)
    app = Forebay(url)
    try:
        job = await app.enqueue("gc", {})
        done = _burst(tmp_path, _env(tmp_path, url), "gcapp:app")
        assert done.returncode == 0, done.stderr
        finished = await app.get_job(job.id)
        assert finished.result == {"gen0": GEN0_THRESHOLD, "frozen": True}
    finally:
        await app.close()
