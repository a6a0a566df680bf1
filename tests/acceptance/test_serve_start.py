"""``forebay serve`` binds its port before anything else: with the backend down at start it
answers ``/healthz`` 200 and ``/readyz`` 503 at once, and becomes ready without a restart when
the backend comes up; a port already in use is one error line and exit 1, before any worker
starts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.acceptance.test_serve import APP, free_port, serve, wait_until

QUICK_S = 5.0
"""Well below the backend's 10 s reconnect window, which the start used to wait out."""


@contextmanager
def redis_server(port: int, folder: Path) -> Iterator[None]:
    """A private Redis server on ``port`` (stopped by its pid on the way out)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.TransportError:
        return 0


def test_serve_answers_not_ready_while_the_backend_is_down_then_ready(tmp_path: Path) -> None:
    store_port = free_port()
    started = time.monotonic()
    env = {"FOREBAY_URL": f"redis://127.0.0.1:{store_port}/0?reconnect_s=60"}
    with serve(tmp_path, env=env) as server:
        assert time.monotonic() - started < QUICK_S + 3  # interpreter start-up included
        assert httpx.get(f"{server.base}/healthz").status_code == 200
        ready = httpx.get(f"{server.base}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["backend"]["ok"] is False
        with redis_server(store_port, tmp_path):
            wait_until(
                lambda: _status(f"{server.base}/readyz") == 200, 60, "/readyz to be 200", server
            )
            enqueued = httpx.post(f"{server.base}/v1/queues/documents/jobs", json={"payload": {}})
            assert enqueued.status_code == 201, enqueued.text


def test_a_port_in_use_is_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    (tmp_path / "svcapp.py").write_text(APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "forebay", "serve", "svcapp:app", "--port", str(port)],
            cwd=tmp_path,
            env={"FOREBAY_URL": f"sqlite:///{tmp_path / 'forebay.db'}", "PATH": "/usr/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is already in use; stop what "
        "listens there or choose another with --port (env FOREBAY_PORT)"
    ], done.stderr
    assert "Traceback" not in done.stderr
    assert "worker" not in done.stderr and "started on queues" not in done.stderr
    assert not (tmp_path / "forebay.db").exists()  # nothing was opened either
