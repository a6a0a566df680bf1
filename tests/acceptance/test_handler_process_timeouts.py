"""``forebay worker --processes N``: a plain ``def`` handler that overruns its timeout in a
handler process is stopped by killing that process, before its job runs again.

Handlers tell the test what they do through a named pipe; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.acceptance.test_worker_processes import _enqueue, _env, _events, _stored

APP = textwrap.dedent(
    """
    import os
    import threading

    import psutil

    from forebay import Backoff, Forebay

    app = Forebay()  # FOREBAY_URL, set by the test

    @app.handler("work", timeout_s=2, max_attempts=2, backoff=Backoff(base_s=0, jitter=False))
    def handle(job):  # a plain function: it runs in a thread of its handler process
        first = os.path.join(os.environ["STATE"], f"first-{job.id}")
        if job.attempt == 1:
            with open(first, "w") as f:
                f.write(str(os.getpid()))
            state = "first"
        else:
            with open(first) as f:
                state = "alive" if psutil.pid_exists(int(f.read())) else "gone"
        with open(os.environ["EVENTS"], "w") as events:
            events.write(f"{job.id} {job.attempt} {os.getpid()} {state}\\n")
        if job.attempt == 1:
            threading.Event().wait()  # never returns: only killing its process stops it
    """
)


def _read_lines(reader: int, n: int, timeout_s: float) -> list[list[str]]:
    import select
    import time

    deadline = time.monotonic() + timeout_s
    data = b""
    while data.count(b"\n") < n:
        left = deadline - time.monotonic()
        assert left > 0, f"handlers reported only {data!r}"
        ready, _, _ = select.select([reader], [], [], left)
        if ready:
            data += os.read(reader, 4096)
    return [line.split() for line in data.decode().splitlines()[:n]]


def test_a_def_handler_past_its_timeout_in_a_handler_process_is_killed_first(
    tmp_path: Path,
) -> None:
    (tmp_path / "timeoutapp.py").write_text(APP)
    (tmp_path / "state").mkdir()
    url = f"sqlite:///{tmp_path / 'forebay.db'}"
    ids = _enqueue(url, ["hold", "hold"])
    env = _env(tmp_path, url) | {"STATE": str(tmp_path / "state")}
    argv = ["worker", "timeoutapp:app", "--processes", "2", "--burst"]
    with _events(tmp_path / "events") as events:
        worker = subprocess.Popen(
            [sys.executable, "-m", "forebay", *argv],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, stderr = worker.communicate(timeout=90)
        assert worker.returncode == 0, stderr
        lines = _read_lines(events, 4, timeout_s=5)  # written before the worker exited
    assert "did not stop a cancelled call" in stderr
    for job_id in ids:
        mine = [line for line in lines if int(line[0]) == job_id]
        assert [(line[1], line[3]) for line in mine] == [("1", "first"), ("2", "gone")]
        assert mine[0][2] != mine[1][2]  # the second run is in a new handler process
        stored = _stored(tmp_path / "forebay.db", job_id)
        assert (stored["state"], stored["attempt"]) == ("completed", 2)
        # completed: the timeout of the first attempt is in its errors history
        assert stored["error"] is None
        history = json.loads(str(stored["errors"]))
        assert [e["message"] for e in history] == [
            "TimeoutError: handler ran longer than timeout_s=2"
        ]
