"""The ``forebay`` command, run as a subprocess (``python -m forebay``) against real stores.

The tests marked by the ``url`` fixture run on every backend of this checkout; the others use a
fresh SQLite file. No test sleeps to synchronise: they wait for the process to exit, or poll the
store for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forebay import Forebay, JobState
from forebay.sqlfiles import migration_files
from forebay.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]

APP = """
import asyncio
from pathlib import Path

from forebay import Forebay, PermanentError

app = Forebay()  # FOREBAY_URL, set by the test
app.queue("limited", max_depth=1)


@app.handler("documents", max_attempts=2)
async def ingest(job):
    await job.progress(50, "parsed")
    if job.payload.get("bad"):
        raise PermanentError("no url in payload")


@app.handler("reports", max_attempts=1)
async def report(job):
    raise ValueError("cannot render")


@app.handler("slow")
async def slow(job):
    # Runs until the test creates the file named in the payload (or the worker stops).
    while not Path(job.payload["until"]).exists():
        await asyncio.sleep(0.02)
"""


@dataclass
class Cli:
    """Runs ``python -m forebay`` in a folder, against one store."""

    cwd: Path
    url: str | None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "FOREBAY_URL"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        env["COLUMNS"] = "200"
        if self.url is not None:
            env["FOREBAY_URL"] = self.url
        return env | extra

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "forebay", *args],
            cwd=self.cwd,
            env=self.env(**(env or {})),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        done = self(*args, input=input)
        assert done.returncode == 0, f"forebay {' '.join(args)}: {done.stderr}"
        return done.stdout

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", input=input))

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "forebay", *args],
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one ``error:`` line on stderr and no traceback."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


async def _drop(url: str) -> None:
    app = Forebay(url)
    async with app:
        await app.backend.drop_everything()


async def _get_job(url: str, job_id: int) -> Any:
    async with Forebay(url) as app:
        return await app.get_job(job_id)


def wait_for_state(url: str, job_id: int, state: JobState, timeout_s: float = 30.0) -> None:
    """Poll the store until the job is in ``state`` (bounded: fails after ``timeout_s``)."""
    wait_until(
        lambda: asyncio.run(_get_job(url, job_id)).state == state,
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"job {job_id} to be {state}",
    )


@pytest.fixture
def store_url(url: str) -> Iterator[str]:
    """A fresh store of each backend under test, dropped afterwards where it has a schema."""
    yield url
    if not url.startswith("sqlite"):
        asyncio.run(_drop(url))


@pytest.fixture
def cli(tmp_path: Path, store_url: str) -> Cli:
    (tmp_path / "app.py").write_text(APP)
    return Cli(tmp_path, store_url)


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    (tmp_path / "app.py").write_text(APP)
    return Cli(tmp_path, f"sqlite:///{tmp_path / 'forebay.db'}")


# -- every backend -------------------------------------------------------------------------------
def test_enqueue_inspect_work_and_count(cli: Cli) -> None:
    assert isinstance(cli.json("migrate")["applied"], list)
    first = cli.json("enqueue", "documents", '{"url": "a"}', "--key", "doc-42", "--priority", "5")
    assert first["created"] is True and first["state"] == "queued" and first["priority"] == 5
    again = cli.json("enqueue", "documents", '{"url": "other"}', "--key", "doc-42")
    assert again["created"] is False and again["id"] == first["id"]
    assert again["payload"] == {"url": "a"}
    second = cli.json("enqueue", "documents", '{"url": "b"}')

    listed = cli.json("jobs")
    assert [j["id"] for j in listed] == [second["id"], first["id"]]  # newest first
    shown = cli.json("job", str(first["id"]))
    assert shown["key"] == "doc-42" and shown["payload"] == {"url": "a"}

    summary = cli.json("worker", "app:app", "--queue", "documents", "--burst")
    assert summary["processed"] == 2
    done = cli.json("job", str(first["id"]))
    assert done["state"] == "completed" and done["attempt"] == 1 and done["deliveries"] == 1
    assert done["progress_message"] == "parsed"

    [counts] = cli.json("stats")
    assert counts["queue"] == "documents"
    assert (counts["completed"], counts["queued"], counts["dead"]) == (2, 0, 0)


def test_sigterm_releases_the_running_job_and_exits_0(cli: Cli, tmp_path: Path) -> None:
    assert cli.url is not None
    job = cli.json("enqueue", "slow", json.dumps({"until": str(tmp_path / "never")}))
    worker = cli.start("worker", "app:app", "--queue", "slow", "--shutdown-grace-s", "0.2")
    try:
        wait_for_state(cli.url, job["id"], JobState.RUNNING)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr
    released = cli.json("job", str(job["id"]))
    assert released["state"] == "queued"
    assert (released["attempt"], released["deliveries"]) == (0, 0)  # nothing spent


# -- SQLite --------------------------------------------------------------------------------------
def test_sigterm_lets_a_running_job_finish_within_the_grace(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    cli = sqlite_cli
    assert cli.url is not None
    go = tmp_path / "go"
    job = cli.json("enqueue", "slow", json.dumps({"until": str(go)}))
    worker = cli.start("worker", "app:app", "--shutdown-grace-s", "60")
    try:
        wait_for_state(cli.url, job["id"], JobState.RUNNING)
        worker.send_signal(signal.SIGTERM)
        go.touch()  # the handler returns now, inside the grace period
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert cli.json("job", str(job["id"]))["state"] == "completed"


def test_enqueue_prints_the_id_and_whether_it_was_created(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    assert cli.ok("enqueue", "documents", '{"a": 1}', "--key", "k").strip() == (
        "job 1 queued on documents (created=true)"
    )
    out = cli.ok("enqueue", "documents", '{"a": 1}', "--key", "k")
    assert out.startswith("job 1 ") and "created=false" in out


def test_enqueue_schedules_with_delay_or_run_at(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    later = cli.json("enqueue", "documents", "{}", "--delay-s", "3600")
    at = cli.json("enqueue", "documents", "{}", "--run-at", "2100-01-01T00:00:00Z")
    assert at["run_at"].startswith("2100-01-01T00:00:00")
    assert later["run_at"] > later["created_at"]
    [counts] = cli.json("stats")
    assert (counts["queued"], counts["scheduled"]) == (2, 2)
    assert cli.json("worker", "app:app", "--burst")["processed"] == 0  # nothing is due


def test_enqueue_app_declarations_apply(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.ok("enqueue", "limited", "{}", "--app", "app:app")
    full = cli("enqueue", "limited", "{}", "--app", "app:app")
    assert "is full" in one_error_line(full)
    assert full.returncode == 1
    # the app stored its max_depth: it holds without the app too (every producer)
    assert "is full" in one_error_line(cli("enqueue", "limited", "{}"))
    cli.ok("queue", "set", "limited", "--no-max-depth")
    cli.ok("enqueue", "limited", "{}")


def test_bulk_enqueue_from_a_file_and_stdin(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    lines = [json.dumps({"id": f"doc-{i}", "n": i}) for i in range(2500)]
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines[:1000]) + "\n\n" + "\n".join(lines[1000:]))
    first = cli.json("enqueue", "documents", "--file", "jobs.jsonl", "--key-field", "id")
    assert (first["jobs"], first["created"], first["existing"]) == (2500, 2500, 0)
    assert len(set(first["ids"])) == 2500
    rerun = cli.json("enqueue", "documents", "--file", "jobs.jsonl", "--key-field", "id")
    assert (rerun["created"], rerun["existing"]) == (0, 2500)
    assert rerun["ids"] == first["ids"]

    piped = cli.json("enqueue", "other", "--file", "-", "--batch-size", "7", input="\n".join(lines))
    assert piped["created"] == 2500
    human = cli.ok("enqueue", "third", "-f", "jobs.jsonl")
    assert (
        human.strip() == "enqueued 2,500 jobs on third: 2,500 created, 0 already existed (same key)"
    )
    counts = {c["queue"]: c["queued"] for c in cli.json("stats")}
    assert counts == {"documents": 2500, "other": 2500, "third": 2500}


def test_bulk_enqueue_with_a_bad_line_stores_nothing(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    (tmp_path / "jobs.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    bad = cli("enqueue", "documents", "--file", "jobs.jsonl")
    line = one_error_line(bad)
    assert "line 3" in line and "nothing was enqueued" in line
    assert bad.returncode == 2
    (tmp_path / "keys.jsonl").write_text('{"id": "x"}\n{"no": "id"}\n')
    missing = cli("enqueue", "documents", "--file", "keys.jsonl", "--key-field", "id")
    assert "line 2" in one_error_line(missing)
    assert cli.json("jobs") == []


def test_jobs_filters_and_pages(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    ids = [cli.json("enqueue", "documents", json.dumps({"n": i}))["id"] for i in range(5)]
    cli.json("enqueue", "reports", "{}")
    cli.ok("cancel", str(ids[0]))
    assert [j["id"] for j in cli.json("jobs", "--queue", "documents", "--limit", "2")] == [
        ids[4],
        ids[3],
    ]
    page = cli.json("jobs", "--queue", "documents", "--before-id", str(ids[3]))
    assert [j["id"] for j in page] == [ids[2], ids[1], ids[0]]
    assert [j["id"] for j in cli.json("jobs", "--state", "cancelled")] == [ids[0]]
    assert len(cli.json("jobs", "--state", "queued")) == 5

    table = cli.ok("jobs", "--queue", "documents", "--limit", "4")
    assert table.splitlines()[0].split()[:3] == ["id", "queue", "state"]
    assert "more with --before-id" in table
    assert "no jobs match" in cli.ok("jobs", "--queue", "nothing")


def test_job_shows_details(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    job = cli.json("enqueue", "documents", '{"bad": true}', "--key", "doc-7")
    cli.ok("worker", "app:app", "--queue", "documents", "--burst")
    out = cli.ok("job", str(job["id"]))
    for expected in ("dead", "doc-7", "PermanentError: no url in payload", "50% parsed", '"bad"'):
        assert expected in out


def test_cancel_queued_jobs_and_refuse_others(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    a = cli.json("enqueue", "documents", "{}")["id"]
    b = cli.json("enqueue", "documents", "{}")["id"]
    assert cli.ok("cancel", str(a), str(b)).strip() == f"cancelled jobs {a}, {b}"
    # cancelling a cancelled job again succeeds and says so (as HTTP answers 200)
    assert cli.ok("cancel", str(a)).strip() == f"job {a} was already cancelled"
    again = cli("cancel", str(a), "424242")
    assert again.stdout.strip() == f"job {a} was already cancelled"
    line = one_error_line(again)
    assert line == "error: not cancelled: job 424242 (no such job)"
    assert again.returncode == 1


def _make_dead_jobs(cli: Cli) -> dict[str, list[int]]:
    documents = [cli.json("enqueue", "documents", '{"bad": true}')["id"] for _ in range(3)]
    reports = [cli.json("enqueue", "reports", "{}")["id"]]
    cli.json("enqueue", "documents", '{"url": "fine"}')
    assert cli.json("worker", "app:app", "--burst")["processed"] == 5
    return {"documents": documents, "reports": reports}


def test_dead_ls_with_filters(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    dead = _make_dead_jobs(cli)
    assert len(cli.json("dead", "ls")) == 4
    assert [j["id"] for j in cli.json("dead", "ls", "--queue", "reports")] == dead["reports"]
    by_type = cli.json("dead", "ls", "--error-type", "PermanentError")
    assert sorted(j["id"] for j in by_type) == dead["documents"]
    assert {j["error_type"] for j in cli.json("dead", "ls", "--error-type", "ValueError")} == {
        "ValueError"
    }
    assert cli.json("dead", "ls", "--since", "2100-01-01T00:00:00Z") == []
    assert len(cli.json("dead", "ls", "--until", "2100-01-01T00:00:00+02:00")) == 4
    assert len(cli.json("dead", "ls", "--limit", "2")) == 2
    table = cli.ok("dead", "ls", "--queue", "reports")
    assert "ValueError: cannot render" in table


def test_dead_replay_with_filters_and_dry_run(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    dead = _make_dead_jobs(cli)
    dry = cli.json("dead", "replay", "--queue", "documents", "--dry-run")
    assert dry == {"action": "replay", "dry_run": True, "count": 3}
    assert len(cli.json("dead", "ls")) == 4  # the dry run changed nothing
    assert "would replay 3 dead jobs" in cli.ok(
        "dead", "replay", "--queue", "documents", "--dry-run"
    )

    one = dead["documents"][0]
    assert cli.ok("dead", "replay", "--id", str(one)).strip() == "replayed 1 dead job"
    replayed = cli.json("job", str(one))
    assert (replayed["state"], replayed["attempt"]) == ("queued", 0)
    assert cli.json("dead", "replay", "--error-type", "ValueError")["count"] == 1
    assert [j["id"] for j in cli.json("dead", "ls")] == sorted(dead["documents"][1:], reverse=True)
    assert cli.ok("dead", "replay", "--queue", "nothing").strip() == "no dead jobs match"


def test_dead_purge_asks_unless_yes(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    dead = _make_dead_jobs(cli)
    refused = cli("dead", "purge", "--queue", "documents")  # stdin is not a terminal
    assert "pass --yes" in one_error_line(refused)
    assert refused.returncode == 2
    assert cli.json("dead", "purge", "--error-type", "ValueError", "--dry-run")["count"] == 1
    assert len(cli.json("dead", "ls")) == 4

    assert cli.json("dead", "purge", "--queue", "reports", "--yes")["count"] == 1
    assert cli.ok("dead", "purge", "--id", str(dead["documents"][0]), "--yes").strip() == (
        "purged 1 dead job"
    )
    assert len(cli.json("dead", "ls")) == 2
    assert cli.ok("dead", "purge", "--queue", "reports").strip() == "no dead jobs match"
    assert cli.json("jobs", "--state", "completed")  # purge touches dead jobs only


@pytest.mark.parametrize(("answer", "left"), [("y", 0), ("n", 1)])
def test_dead_purge_asks_on_a_terminal(sqlite_cli: Cli, answer: str, left: int) -> None:
    cli = sqlite_cli
    cli.json("enqueue", "reports", "{}")
    cli.ok("worker", "app:app", "--queue", "reports", "--burst")
    primary, secondary = pty.openpty()
    purge = subprocess.Popen(
        [sys.executable, "-m", "forebay", "dead", "purge"],
        cwd=cli.cwd,
        env=cli.env(),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"delete 1 dead job for good?" not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([primary], [], [], 0.2)[0]:
                seen += _read(primary)
        os.write(primary, f"{answer}\n".encode())
        assert purge.wait(timeout=60) == (0 if answer == "y" else 1)
    finally:
        purge.kill()
        os.close(primary)
    assert len(cli.json("dead", "ls")) == left


def test_stats_counts_per_queue_and_state(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    _make_dead_jobs(cli)
    cli.json("enqueue", "documents", "{}", "--delay-s", "3600")
    cli.json("enqueue", "reports", "{}")
    counts = {c["queue"]: c for c in cli.json("stats")}
    assert set(counts) == {"documents", "reports"}
    docs, reports = counts["documents"], counts["reports"]
    assert (docs["completed"], docs["dead"], docs["queued"], docs["scheduled"]) == (1, 3, 1, 1)
    assert docs["oldest_queued_age_s"] is None  # the only queued job is not due yet
    assert (reports["dead"], reports["queued"]) == (1, 1)
    assert reports["oldest_queued_age_s"] >= 0
    table = cli.ok("stats").splitlines()
    assert table[0].split()[:5] == ["queue", "waiting", "queued", "scheduled", "retrying"]
    assert table[-2].split()[:3] == ["total", "0", "2"]
    assert table[-1].startswith("store: ")


def test_stats_watch_redraws_until_sigterm(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.json("enqueue", "documents", "{}")
    primary, secondary = pty.openpty()  # a terminal, so rich draws live
    watch = subprocess.Popen(
        [sys.executable, "-m", "forebay", "stats", "--watch", "--interval-s", "0.2"],
        cwd=cli.cwd,
        env=cli.env(),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while seen.count(b"documents") < 2:  # drawn, then redrawn
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                seen += os.read(primary, 65536)
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 0
        assert watch.stderr is not None and b"Traceback" not in watch.stderr.read()
    finally:
        watch.kill()
        if watch.stderr is not None:
            watch.stderr.close()
        os.close(primary)


def test_migrate_and_migrate_sql(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    sql = cli.ok("migrate", "--sql")
    assert sql.startswith("-- 0001_initial.sql")
    assert "CREATE TABLE forebay_jobs" in sql
    assert not (tmp_path / "forebay.db").exists()  # --sql connects to nothing
    assert "CREATE TABLE forebay_payloads" in sql
    applied = [name for _, name, _ in migration_files("forebay.backends.sqlite")]
    assert applied[:2] == ["0001_initial.sql", "0002_payloads.sql"]
    assert cli.json("migrate") == {"applied": applied}
    assert cli.json("migrate") == {"applied": []}
    assert "up to date" in cli.ok("migrate")
    assert cli.json("migrate", "--sql")["sql"] == sql.rstrip("\n") + "\n"
    redis = cli("migrate", "--sql", "--url", "redis://127.0.0.1:6379/0")
    assert "no SQL schema" in one_error_line(redis)


def test_migrate_sql_on_postgres_connects_to_nothing(sqlite_cli: Cli) -> None:
    pytest.importorskip("asyncpg")
    nowhere = "postgresql://nobody@127.0.0.1:1/nothing"
    sql = sqlite_cli.ok("migrate", "--sql", "--url", nowhere, "--schema", "jobs_two")
    assert '"jobs_two"' in sql and "CREATE" in sql
    assert '"from_url"' in sqlite_cli.ok("migrate", "--sql", "--url", f"{nowhere}?schema=from_url")
    bad = sqlite_cli("migrate", "--sql", "--url", nowhere, "--schema", "no good;")
    assert "schema" in one_error_line(bad)


def test_url_option_wins_over_the_environment(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    other = f"sqlite:///{tmp_path / 'other.db'}"
    cli.ok("enqueue", "documents", "{}", "--url", other)
    cli.ok("migrate")  # the environment's store exists, empty
    assert cli.json("jobs") == []
    assert len(cli.json("jobs", "--url", other)) == 1
    default = Cli(tmp_path, None)  # neither: ./forebay.db in the current folder
    default.ok("enqueue", "documents", "{}")
    assert (tmp_path / "forebay.db").exists()

    # An app brings its own URL (from its code, else FOREBAY_URL); only --url overrides it.
    (tmp_path / "fixed.py").write_text(
        'from forebay import Forebay\napp = Forebay("sqlite:///fixed.db")\n'
    )
    cli.ok("enqueue", "documents", "{}", "--app", "fixed:app")
    assert len(Cli(tmp_path, "sqlite:///fixed.db").json("jobs")) == 1
    cli.ok("enqueue", "documents", "{}", "--app", "fixed:app", "--url", other)
    assert len(cli.json("jobs", "--url", other)) == 2


def test_worker_burst_shows_progress_on_a_terminal(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.ok("enqueue", "documents", "--file", "-", input='{"n": 1}\n' * 50)
    primary, secondary = pty.openpty()
    worker = subprocess.Popen(
        [sys.executable, "-m", "forebay", "worker", "app:app", "--burst"],
        cwd=cli.cwd,
        env=cli.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while True:  # read the terminal while the worker runs, so it never blocks on it
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([primary], [], [], 0.2)
            chunk = _read(primary) if ready else b""
            seen += chunk
            if worker.poll() is not None and not chunk:
                break
        out = worker.communicate(timeout=60)[0].decode()
    finally:
        worker.kill()
        os.close(primary)
    assert worker.returncode == 0
    assert out.strip() == "processed 50 jobs"
    assert b"50/50" in seen and b"processed" in seen
    assert b"stopped after 50 jobs" in seen  # log lines still reach the terminal


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal closed with the process
        return b""


# -- errors --------------------------------------------------------------------------------------
BROKEN_APPS = {
    "raises.py": "x = 1 / 0\n",
    "needs.py": "import a_module_that_is_not_installed\n",
    "notanapp.py": "app = 42\n",
}

USER_ERRORS = [
    (["enqueue", "documents", "{bad"], "not valid JSON", 2),
    (["enqueue", "documents"], "give the job's payload as JSON, or --file", 2),
    (["enqueue", "documents", "{}", "--file", "x.jsonl"], "not both", 2),
    (["enqueue", "documents", "--file", "x.jsonl", "--key", "k"], "--key-field", 2),
    (["enqueue", "documents", "{}", "--run-at", "2026-01-01T00:00:00"], "no timezone", 2),
    (
        ["enqueue", "documents", "{}", "--delay-s", "5", "--run-at", "2026-01-01T00:00Z"],
        "not both",
        2,
    ),
    (["enqueue", "documents", "--file", "missing.jsonl"], "No such file", 1),
    (["enqueue", "bad queue!", "{}"], "queue name", 2),
    (["job", "424242", "--url", "sqlite:///made.db"], "no job with id 424242", 1),
    (["jobs", "--url", "bogus://nowhere"], "unsupported backend URL", 2),
    (["jobs", "--url", "sqlite:////no/such/folder/forebay.db"], "does not exist", 1),
    (["dead", "ls", "--since", "yesterday"], "not an ISO 8601 time", 2),
    (["stats", "--watch", "--json"], "--watch", 2),
    (["worker", "nosuchmodule:app"], "cannot import 'nosuchmodule'", 2),
    (["worker", "app"], "module:attribute", 2),
    (["worker", "app:missing"], "has no attribute 'missing'", 2),
    (["worker", "raises:app"], "ZeroDivisionError", 2),
    (["worker", "needs:app"], "a_module_that_is_not_installed", 2),
    (["worker", "notanapp:app"], "not a forebay.Forebay app", 2),
    (["worker", "app:app", "--queue", "nope"], "no handler for queue(s) nope", 2),
    (["migrate", "--schema", "x"], "--schema goes with --sql", 2),
]


@pytest.mark.parametrize(("args", "expected", "code"), USER_ERRORS, ids=lambda v: str(v)[:40])
def test_user_errors_are_one_line(
    sqlite_cli: Cli, tmp_path: Path, args: list[str], expected: str, code: int
) -> None:
    for name, text in BROKEN_APPS.items():
        (tmp_path / name).write_text(text)
    sqlite_cli.ok("migrate", "--url", "sqlite:///made.db")  # a store that exists, empty
    done = sqlite_cli(*args)
    assert expected in one_error_line(done)
    assert done.returncode == code


def test_an_unreachable_store_is_one_line(sqlite_cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()  # a folder where the database file should be: SQLite cannot open it
    done = sqlite_cli("jobs", "--url", f"sqlite:///{folder}")
    assert "SQLite" in one_error_line(done)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server_url", "driver"),
    [("postgresql://postgres@127.0.0.1:1/nothing", "asyncpg"), ("redis://127.0.0.1:1/0", "redis")],
    ids=["postgres", "redis"],
)
def test_an_unreachable_server_is_one_line(sqlite_cli: Cli, server_url: str, driver: str) -> None:
    pytest.importorskip(driver)
    done = sqlite_cli("stats", "--url", server_url)  # nothing listens on port 1
    notice, error = done.stderr.splitlines()
    assert notice.startswith("connecting to ") and notice.endswith(" (retrying)…")
    assert error.startswith("error: ") and "unreachable" in error
    assert done.returncode == 1


def test_a_missing_extra_names_the_pip_line(sqlite_cli: Cli, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "asyncpg.py").write_text("raise ImportError('not installed here')\n")
    done = sqlite_cli(
        "jobs",
        "--url",
        "postgresql://postgres@127.0.0.1/x",
        env={"PYTHONPATH": f"{shadow}{os.pathsep}{ROOT / 'src'}"},
    )
    assert "pip install 'forebay[postgres]'" in one_error_line(done)


# -- the docs ------------------------------------------------------------------------------------
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _doc_steps(markdown: str) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """Files (fences with title="name") and console commands with their shown output."""
    files: dict[str, str] = {}
    steps: list[tuple[str, list[str]]] = []
    for lang, info, body in FENCE.findall(markdown):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            files[title[1]] = body
        elif lang == "console":
            for line in body.splitlines():
                if line.startswith("$ "):
                    steps.append((line[2:], []))
                elif steps:
                    steps[-1][1].append(line)
    return files, steps


@pytest.mark.slow
def test_docs_cli_examples_run_as_written(tmp_path: Path) -> None:
    files, steps = _doc_steps((ROOT / "docs" / "cli.md").read_text())
    assert {"myapp.py", "documents.jsonl"} <= set(files) and len(steps) > 20
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "forebay"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m forebay "$@"\n')
    shim.chmod(0o755)
    env = Cli(tmp_path, None).env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for command, shown in steps:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )
        if shown and shown[0].startswith("error:"):
            assert done.returncode != 0, command
            assert done.stderr.strip() == shown[0], command
        else:
            assert done.returncode == 0, f"{command}: {done.stderr}"
            # no exception escaped (a dead letter's log line carries its traceback as a field)
            assert not any(ln.startswith("Traceback") for ln in done.stderr.splitlines()), command
