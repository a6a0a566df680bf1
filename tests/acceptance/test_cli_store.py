"""Which store a command opens: readers refuse a SQLite file that does not exist (and name the
store they read), and interactive commands say at once that they are waiting for an unreachable
server, then give up within seconds, while a worker keeps trying."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.acceptance.test_cli import APP, Cli, one_error_line

READERS = [("stats",), ("jobs",), ("job", "1"), ("dead", "ls")]
WRITERS = [("enqueue", "documents", "{}"), ("migrate",)]


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_readers_refuse_a_missing_sqlite_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "typo.db"
    done = Cli(tmp_path, f"sqlite:///{missing}")(*command)
    line = one_error_line(done)
    assert done.returncode == 1
    assert f"no store at sqlite:///{missing}" in line
    assert not missing.exists()  # nothing was created


def test_writers_create_the_file_and_readers_name_it(tmp_path: Path) -> None:
    for i, command in enumerate(WRITERS):
        path = tmp_path / f"new{i}.db"
        Cli(tmp_path, f"sqlite:///{path}").ok(*command)
        assert path.exists(), command
    cli = Cli(tmp_path, "sqlite:///./new0.db")  # relative: shown as the full path
    where = f"sqlite:///{tmp_path / 'new0.db'}"
    assert cli.ok("stats").splitlines()[-1] == f"store: {where}"
    assert cli.ok("jobs", "--queue", "nothing").strip() == f"no jobs match in {where}"
    assert cli.ok("dead", "ls").strip() == f"no dead jobs match in {where}"
    empty = Cli(tmp_path, "sqlite:///./new1.db")  # migrated, no jobs
    assert empty.ok("stats").strip() == f"no jobs yet in sqlite:///{tmp_path / 'new1.db'}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


INTERACTIVE = [
    ("stats",),
    ("jobs",),
    ("job", "1"),
    ("enqueue", "documents", "{}"),
    ("dead", "ls"),
    ("cancel", "1"),
]


@pytest.mark.parametrize("scheme", ["postgresql://postgres:pw@", "redis://:pw@"])
def test_interactive_commands_say_they_are_connecting_and_fail_fast(
    tmp_path: Path, scheme: str
) -> None:
    port = _closed_port()
    path = "/test" if scheme.startswith("postgresql") else "/0"
    cli = Cli(tmp_path, f"{scheme}127.0.0.1:{port}{path}")
    shown = f"{scheme.replace(':pw@', ':***@')}127.0.0.1:{port}{path}"

    def timed(command: tuple[str, ...]) -> tuple[int, str, float]:
        """Exit code, stderr, and the seconds from the "connecting to" notice to the exit:
        the interpreter's start-up before it, seconds of its own on a busy machine, left out."""
        with cli.start(*command) as proc:
            assert proc.stderr is not None
            notice = proc.stderr.readline()
            noticed = time.monotonic()
            rest = proc.stderr.read()
            code = proc.wait(timeout=90)
        return code, notice + rest, time.monotonic() - noticed

    # The commands run at once, each in its own process (and each on its own would be as fast).
    with ThreadPoolExecutor(len(INTERACTIVE)) as pool:
        answers = list(pool.map(timed, INTERACTIVE))
    for command, (code, stderr, took) in zip(INTERACTIVE, answers, strict=True):
        assert code == 1, (command, stderr)
        # The notice comes 0.3 s into the 3 s window; the default 10 s window would be 9.7 s.
        assert took < 7, (command, took)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines[0] == f"connecting to {shown} (retrying)…", (command, stderr)
        assert lines[-1].startswith("error: ") and "unreachable" in lines[-1], command
        assert len(lines) == 2 and "pw" not in stderr, stderr


def test_a_worker_keeps_trying_past_the_interactive_window(tmp_path: Path) -> None:
    """A worker started while the server is down is still waiting for it after the
    interactive window has passed (it gives up only after the backend's own window)."""
    (tmp_path / "app.py").write_text(APP)
    port = _closed_port()
    url = f"redis://127.0.0.1:{port}/0?reconnect_s=30"
    cli = Cli(tmp_path, url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "forebay", "worker", "app:app"],
        cwd=tmp_path,
        env=cli.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(timeout=6)  # longer than an interactive command's window
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
