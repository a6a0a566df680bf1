"""``forebay runs ls|show|start|seal``, ``forebay enqueue --run/--after/--after-policy/--webhook``
and the ``waiting`` state in ``forebay jobs``, ``stats`` and ``cancel``, as subprocesses on a
fresh SQLite file (the contract tests hold every backend to the semantics)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.test_cli import Cli

APP = """
from forebay import Forebay

app = Forebay()  # FOREBAY_URL, set by the test
app.queue("reports")  # a run's on_complete queue: its jobs stay queued here


@app.handler("documents")
async def ingest(job):
    for i in range(job.payload.get("fan", 0)):
        await job.enqueue("documents", {"child": i})
"""


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one ``error:`` line on stderr and no traceback (a busy machine
    may add the "connecting to ..." notice before it)."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip() and not x.startswith("connecting")]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "app.py").write_text(APP)
    return Cli(tmp_path, f"sqlite:///{tmp_path / 'forebay.db'}")


def test_a_run_is_started_joined_sealed_shown_and_completes(cli: Cli) -> None:
    run = cli.json(
        "runs", "start", "--name", "crawl 7", "--key", "crawl-7", "--meta", '{"n": 7}',
        "--on-complete", "reports",
    )  # fmt: skip
    assert run["created"] is True and run["state"] == "open" and run["meta"] == {"n": 7}
    again = cli.ok("runs", "start", "--key", "crawl-7")
    assert f"run {run['id']} already exists with key crawl-7" in again

    joined = cli.json("enqueue", "documents", '{"fan": 2}', "--run", run["id"])
    assert joined["run_id"] == run["id"]
    said = cli.ok("enqueue", "documents", "{}", "--run", run["id"])
    assert f"queued on documents in run {run['id']}" in said

    table = cli.ok("runs", "ls").splitlines()
    assert table[0].split() == [
        "id", "name", "state", "finished", "waiting", "queued", "running", "completed", "dead",
        "cancelled", "started",
    ]  # fmt: skip
    assert table[1].split()[:8] == [run["id"], "crawl", "7", "open", "0/2", "0", "2", "0"]
    [listed] = cli.json("runs", "ls", "--state", "open")
    assert listed["id"] == run["id"] and listed["total"] == 2
    assert cli.json("runs", "ls", "--state", "completed") == []

    shown = cli.ok("runs", "show", run["id"])
    assert "crawl 7" in shown and "reports" in shown and '"n": 7' in shown
    assert shown.splitlines()[-2].split() == [
        "waiting", "queued", "running", "completed", "dead", "cancelled", "total",
    ]  # fmt: skip
    assert shown.splitlines()[-1].split() == ["0", "2", "0", "0", "0", "0", "2"]

    assert "is sealed: 0 of 2 jobs finished" in cli.ok("runs", "seal", run["id"])
    late = cli("enqueue", "documents", "{}", "--run", run["id"])
    assert late.returncode == 1 and "is sealed" in one_error_line(late)

    assert cli.json("worker", "app:app", "--queue", "documents", "--burst")["processed"] == 4
    done = cli.json("runs", "show", run["id"])
    assert done["state"] == "completed" and (done["total"], done["completed"]) == (4, 4)
    assert cli.json("runs", "seal", run["id"])["state"] == "completed"
    of_run = cli.json("jobs", "--run", run["id"])
    assert len(of_run) == 4 and sum(j["parent_id"] is not None for j in of_run) == 2
    [summary] = cli.json("jobs", "--queue", "reports")
    assert summary["key"] == f"run:{run['id']}:complete" and summary["payload"]["total"] == 4

    watched = cli("runs", "show", run["id"], "--watch")  # complete already: draws and exits 0
    assert watched.returncode == 0, watched.stderr
    assert "4/4" in watched.stdout and "completed" in watched.stdout


def test_runs_mistakes_are_one_error_line(cli: Cli) -> None:
    cli.ok("migrate")
    missing = cli("runs", "show", "0" * 32)
    assert missing.returncode == 1 and "no run with id" in one_error_line(missing)
    assert cli("runs", "seal", "0" * 32).returncode == 1
    unknown = cli("enqueue", "documents", "{}", "--run", "0" * 32)
    assert unknown.returncode == 2 and "start it with start_run() first" in one_error_line(unknown)
    meta = cli("runs", "start", "--meta", "[1]")
    assert meta.returncode == 2 and "--meta must be a JSON object" in one_error_line(meta)
    both = cli("runs", "show", "0" * 32, "--watch", "--json")
    assert both.returncode == 2 and "--watch" in one_error_line(both)
    policy = cli("enqueue", "documents", "{}", "--after", "1", "--after-policy", "sometimes")
    assert policy.returncode == 2 and "Traceback" not in policy.stderr


def test_a_job_waits_for_its_parents_and_shows_as_waiting(cli: Cli) -> None:
    parent = cli.json("enqueue", "documents", "{}")["id"]
    hook = "https://example.com/hooks/forebay"
    said = cli.ok("enqueue", "documents", '{"n": 1}', "--after", str(parent), "--webhook", hook)
    assert said.startswith(f"job {parent + 1} waiting on documents, after job {parent} ")
    child = cli.json(
        "enqueue", "documents", '{"n": 2}', "--after", str(parent), "--after", str(parent + 1),
        "--after-policy", "always",
    )  # fmt: skip
    assert child["state"] == "waiting" and child["after"] == [parent, parent + 1]
    assert child["after_policy"] == "always"
    shown = cli.ok("job", str(parent + 1))
    assert hook in shown and "after policy  completed" in shown

    waiting = cli.json("jobs", "--state", "waiting")
    assert [j["id"] for j in waiting] == [child["id"], parent + 1]
    listed = cli.ok("jobs", "--state", "waiting").splitlines()
    assert listed[1].split()[2] == "waiting"
    assert listed[1].rstrip().endswith(f"after {parent}, {parent + 1}")
    [counts] = cli.json("stats")
    assert (counts["waiting"], counts["queued"]) == (2, 1)
    table = cli.ok("stats").splitlines()
    assert table[1].split()[:3] == ["documents", "2", "1"]

    no_parent = cli("enqueue", "documents", "{}", "--after", "999")
    assert no_parent.returncode == 2 and "999" in one_error_line(no_parent)

    assert cli.json("cancel", "--state", "waiting", "--dry-run")["cancelled"] == 2
    assert cli.ok("cancel", str(parent + 1)).startswith(f"cancelled job {parent + 1}")
    assert cli.json("worker", "app:app", "--queue", "documents", "--burst")["processed"] == 2
    assert cli.json("job", str(child["id"]))["state"] == "completed"  # always: after a cancel
    assert cli.json("job", str(parent + 1))["state"] == "cancelled"


def _read_until(primary: int, marker: bytes, seen: bytes = b"") -> bytes:
    """Read the terminal until ``marker`` appears (bounded by a deadline)."""
    deadline = time.monotonic() + 30
    while marker not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                seen += os.read(primary, 65536)
            except OSError:  # the process exited and closed the terminal
                break
    return seen


def _watch(cli: Cli, run_id: str) -> tuple[subprocess.Popen[bytes], int]:
    primary, secondary = pty.openpty()  # a terminal, so rich draws the bar live
    watch = subprocess.Popen(
        [sys.executable, "-m", "forebay", "runs", "show", run_id, "--watch", "--interval-s", "0.1"],
        cwd=cli.cwd,
        env=cli.env(),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    return watch, primary


def test_runs_show_watch_draws_progress_until_the_run_completes(cli: Cli) -> None:
    run = cli.json("runs", "start", "--name", "live")
    for _ in range(3):
        cli.json("enqueue", "documents", "{}", "--run", run["id"])
    watch, primary = _watch(cli, run["id"])
    try:
        seen = _read_until(primary, b"0/3")
        cli.ok("runs", "seal", run["id"])
        cli.ok("worker", "app:app", "--queue", "documents", "--burst")
        assert watch.wait(timeout=30) == 0
        seen = _read_until(primary, b"3/3", seen)
        assert b"live (completed)" in seen
        assert watch.stderr is not None and b"Traceback" not in watch.stderr.read()
    finally:
        watch.kill()
        if watch.stderr is not None:
            watch.stderr.close()
        os.close(primary)


def test_runs_show_watch_stopped_before_completion_exits_5(cli: Cli) -> None:
    run = cli.json("runs", "start", "--name", "open")
    cli.json("enqueue", "documents", "{}", "--run", run["id"])
    watch, primary = _watch(cli, run["id"])
    try:
        _read_until(primary, b"0/1")
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 5
    finally:
        watch.kill()
        if watch.stderr is not None:
            watch.stderr.close()
        os.close(primary)
