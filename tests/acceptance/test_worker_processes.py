"""``forebay worker --processes N`` as a subprocess: handler calls run in N child processes.

* the handlers run in the worker's N children, never in the worker itself;
* errors keep their meaning across the process boundary (``PermanentError`` → dead at once,
  ``Defer`` → queued again later, no attempt spent);
* SIGTERM: the running job finishes within the grace, the worker exits 0 and its children end.

Handlers tell the test what they do through a named pipe, and a held handler waits on another
one the test opens when it is time: nothing here sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from forebay import Forebay

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import os
    from forebay import Defer, Forebay, PermanentError

    app = Forebay()  # FOREBAY_URL, set by the test

    @app.handler("work", concurrency=4)
    def handle(job):  # a plain function: it runs in a thread of its handler process
        with open(os.environ["EVENTS"], "w") as events:
            events.write(f"{job.id} {os.getpid()}\\n")
        kind = job.payload["kind"]
        if kind == "refuse":
            raise PermanentError("no such document")
        if kind == "later":
            raise Defer(600, "downstream is busy")
        if kind == "hold":
            with open(os.environ["GO"]) as go:  # until the test opens it for writing
                go.read()
    """
)


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FOREBAY_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(tmp_path)])
    return env | {
        "FOREBAY_URL": url,
        "EVENTS": str(tmp_path / "events"),
        "GO": str(tmp_path / "go"),
    }


@contextmanager
def _events(path: Path) -> Iterator[int]:
    """The read end of the handlers' pipe (with a writer of our own, so it never reads EOF)."""
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    keep_open = os.open(path, os.O_WRONLY)
    try:
        yield reader
    finally:
        os.close(keep_open)
        os.close(reader)


def _read_events(reader: int, n: int, timeout_s: float) -> list[tuple[int, int]]:
    """The first ``n`` lines ``JOB_ID PID`` the handlers write (waits on the pipe)."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while data.count(b"\n") < n:
        left = deadline - time.monotonic()
        assert left > 0, f"handlers reported only {data!r}"
        ready, _, _ = select.select([reader], [], [], left)
        if ready:
            data += os.read(reader, 4096)
    lines = data.decode().splitlines()[:n]
    return [(int(job), int(pid)) for job, pid in (line.split() for line in lines)]


def _enqueue(url: str, kinds: list[str]) -> list[int]:
    async def go() -> list[int]:
        async with Forebay(url) as producer:
            return [(await producer.enqueue("work", {"kind": kind})).id for kind in kinds]

    return asyncio.run(go())


def _stored(db: Path, job_id: int) -> dict[str, object]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(
            "SELECT state, attempt, defers, error, error_type, errors FROM forebay_jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
    finally:
        conn.close()
    return dict(row)


def test_handlers_run_in_child_processes_and_stop_with_the_worker(tmp_path: Path) -> None:
    (tmp_path / "procapp.py").write_text(APP)
    os.mkfifo(tmp_path / "go")
    db = tmp_path / "forebay.db"
    url = f"sqlite:///{db}"
    refused, later, held = _enqueue(url, ["refuse", "later", "hold"])
    with _events(tmp_path / "events") as events:
        worker = subprocess.Popen(
            [sys.executable, "-m", "forebay", "worker", "procapp:app", "--processes", "2"],
            cwd=tmp_path,
            env=_env(tmp_path, url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ran = dict(_read_events(events, 3, timeout_s=60))
            assert set(ran) == {refused, later, held}

            # The pool started both children before the first call: they are all there now.
            children = psutil.Process(worker.pid).children()
            assert len(children) == 2
            assert all("forebay.execution.child" in c.cmdline() for c in children)
            assert set(ran.values()) <= {c.pid for c in children}  # never the worker itself

            # SIGTERM with a job running: it gets the grace to finish, then the children end.
            worker.send_signal(signal.SIGTERM)
            with open(tmp_path / "go", "w") as go:
                go.write("go")
            _, stderr = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert worker.returncode == 0, stderr
    # No exception escaped (a raw traceback starts a line); the dead letter's line carries
    # the handler's traceback from its child process as one escaped field.
    assert not any(line.startswith("Traceback") for line in stderr.splitlines()), stderr
    [dead_line] = [line for line in stderr.splitlines() if f"job {refused} dead" in line]
    assert 'procapp.py\\", line 13, in handle' in dead_line, dead_line
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)

    # Errors keep their meaning across the process boundary.
    dead = _stored(db, refused)
    assert dead["state"] == "dead" and dead["error_type"] == "PermanentError"
    assert "no such document" in str(dead["error"])
    deferred = _stored(db, later)
    assert deferred["state"] == "queued" and deferred["attempt"] == 0 and deferred["defers"] == 1
    assert _stored(db, held)["state"] == "completed"


def test_a_burst_with_processes_drains_the_queue_and_exits(tmp_path: Path) -> None:
    (tmp_path / "procapp.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'forebay.db'}"
    ids = _enqueue(url, ["quick"] * 12)
    argv = ["worker", "procapp:app", "--processes", "2", "--burst", "--json"]
    with _events(tmp_path / "events") as events:
        worker = subprocess.Popen(
            [sys.executable, "-m", "forebay", *argv],
            cwd=tmp_path,
            env=_env(tmp_path, url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = worker.communicate(timeout=90)
        assert worker.returncode == 0, stderr
        ran = _read_events(events, len(ids), timeout_s=5)  # written before the worker exited
    assert json.loads(stdout)["processed"] == len(ids)
    assert sorted(job for job, _ in ran) == ids
    pids = {pid for _, pid in ran}
    assert worker.pid not in pids and len(pids) <= 2
