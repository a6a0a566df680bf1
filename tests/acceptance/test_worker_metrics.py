"""``forebay worker --metrics-port`` as subprocesses: a standalone worker is scraped and probed.

* two workers on one store, one given ``--metrics-port``, the other ``FOREBAY_METRICS_PORT``:
  each ``/metrics`` counts the jobs its own process finished (together: all of them), and both
  report the same store metrics (the store's finished totals, depth per state, live workers);
* ``/healthz`` and ``/readyz`` answer 200 while the worker runs;
* SIGTERM stops the worker and its HTTP server: exit 0, the port closed;
* a metrics port already in use is one line naming the flag, and exit 1, before any work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forebay import Forebay, NewJob, testing

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    from forebay import Forebay, PermanentError

    app = Forebay()  # FOREBAY_URL, set by the test

    @app.handler("documents", concurrency=4)
    async def ingest(job):
        if job.payload.get("refuse"):
            raise PermanentError("no such document")
    """
)

JOBS = 24
REFUSED = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.proc = proc
        self.base = base
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=10)

    def answers(self) -> bool:
        try:
            return self.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def wait_until(self, predicate: object, what: str) -> None:
        assert callable(predicate)
        testing.wait_until(
            predicate,
            timeout_s=60,
            what=what,
            process=self.proc,
            context=lambda: self.output()[-3000:],
        )


def env_for(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOREBAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(tmp_path)])
    return env | {"FOREBAY_URL": url}


@contextmanager
def worker_process(
    tmp_path: Path, url: str, name: str, *, port: int, by_env: bool
) -> Iterator[WorkerProcess]:
    argv = [sys.executable, "-m", "forebay", "worker", "metricsapp:app"]
    env = env_for(tmp_path, url) | {"FOREBAY_METRICS_HOST": "127.0.0.1"}
    if by_env:
        env["FOREBAY_METRICS_PORT"] = str(port)
    else:
        argv += ["--metrics-port", str(port)]
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield WorkerProcess(proc, f"http://127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def store_url(url: str) -> Iterator[str]:
    """``url`` (a fresh store of each backend), dropped afterwards."""
    yield url

    async def drop() -> None:
        async with testing.isolated_store(url):
            pass

    asyncio.run(drop())


def enqueue(url: str) -> None:
    async def go() -> None:
        async with Forebay(url) as producer:
            await producer.enqueue_many(
                NewJob.create("documents", {"n": n, "refuse": n < REFUSED}) for n in range(JOBS)
            )

    asyncio.run(go())


def test_two_workers_export_their_counters_and_the_stores_truth(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "metricsapp.py").write_text(APP)
    ports = [free_port(), free_port()]
    with (
        worker_process(tmp_path, store_url, "a", port=ports[0], by_env=False) as a,
        worker_process(tmp_path, store_url, "b", port=ports[1], by_env=True) as b,
    ):
        workers = (a, b)
        for w in workers:
            w.wait_until(w.answers, "the metrics port to answer")
        enqueue(store_url)

        def own(name: str) -> float:
            return sum(value(w.get("/metrics").text, name, queue="documents") or 0 for w in workers)

        a.wait_until(
            lambda: (
                own("forebay_jobs_completed_total") == JOBS - REFUSED
                and own("forebay_jobs_dead_total") == REFUSED
            ),
            "both workers' counters to add up to every job",
        )
        for w in workers:
            text = w.get("/metrics").text
            finished = "forebay_queue_finished_total"
            assert value(text, finished, queue="documents", outcome="completed") == JOBS - REFUSED
            assert value(text, finished, queue="documents", outcome="dead") == REFUSED
            assert value(text, finished, queue="documents", outcome="reclaimed") == 0
            jobs = "forebay_queue_jobs"
            assert value(text, jobs, queue="documents", state="completed") == JOBS - REFUSED
            assert value(text, jobs, queue="documents", state="dead") == REFUSED
            assert value(text, "forebay_backend_up") == 1
            assert value(text, "forebay_workers") == 2  # both, whichever is asked
            assert value(text, "forebay_queue_workers", queue="documents") == 2
            ready = w.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["ready"] is True
            assert "documents" in ready.json()["workers"]["queues"]
            assert w.get("/healthz").json() == {"status": "ok"}

        for w in workers:
            w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.proc.wait(timeout=60) == 0, w.output()
            assert not w.answers()
            assert "serving metrics on http://127.0.0.1:" in w.output()
            # No exception escaped (a raw traceback starts a line; a dead letter's is a field).
            assert not any(line.startswith("Traceback") for line in w.output().splitlines())


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_a_metrics_port_in_use_is_one_line_and_exit_1(tmp_path: Path, url: str) -> None:
    (tmp_path / "metricsapp.py").write_text(APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "forebay",
                "worker",
                "metricsapp:app",
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(port),
            ],
            cwd=tmp_path,
            env=env_for(tmp_path, url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "already in use" in line
    assert "--metrics-port" in line and "FOREBAY_METRICS_PORT" in line
