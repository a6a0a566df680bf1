"""``forebay worker`` takes its settings from flags and ``FOREBAY_*`` variables, and ``forebay
enqueue`` gives one job its own limits; run as subprocesses against real stores.

No test sleeps to synchronise: they wait for the process to exit, or poll the store with a
deadline.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from forebay import Forebay, Job, JobState
from forebay.testing import wait_until
from tests.acceptance.test_cli import Cli, one_error_line, store_url, wait_for_state

__all__ = ["store_url"]  # the fixture, shared with test_cli

APP = """
from datetime import timedelta

from forebay import Backoff, Forebay, TransientError

app = Forebay()  # FOREBAY_URL, set by the test

@app.handler("plain")
async def plain(job):
    pass

@app.handler("kept", completed_retention=timedelta(hours=1))
async def kept(job):
    pass

@app.handler("flaky", max_attempts=5, backoff=Backoff(base_s=0, jitter=False))
async def flaky(job):
    raise TransientError("still down")
"""


@pytest.fixture
def settings_cli(tmp_path: Path, store_url: str) -> Cli:
    (tmp_path / "limits.py").write_text(APP)
    return Cli(tmp_path, store_url)


@pytest.fixture
def sqlite_settings_cli(tmp_path: Path) -> Cli:
    (tmp_path / "limits.py").write_text(APP)
    return Cli(tmp_path, f"sqlite:///{tmp_path / 'forebay.db'}")


async def _exists(url: str, job_id: int) -> bool:
    async with Forebay(url) as app:
        return await app.backend.get_job(job_id) is not None


def test_the_retention_flag_and_variables_reach_the_worker(settings_cli: Cli) -> None:
    cli = settings_cli
    assert cli.url is not None
    gone = cli.json("enqueue", "plain", "{}")["id"]
    kept = cli.json("enqueue", "kept", "{}")["id"]
    cli.ok("worker", "limits:app", "--burst")
    wait_for_state(cli.url, gone, JobState.COMPLETED)
    # The flag sets the retention; a variable sets how often the worker prunes.
    argv = ["worker", "limits:app", "--completed-retention", "0"]
    worker = _start(cli, argv, {"FOREBAY_PRUNE_EVERY_S": "0.1"})
    try:
        wait_until(
            lambda: not asyncio.run(_exists(cli.url or "", gone)),
            what="the worker to prune the completed job (--completed-retention 0)",
            process=worker,
        )
        # The queue's own retention (an hour) still keeps its job.
        assert asyncio.run(_exists(cli.url, kept))
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0, errors


def _start(cli: Cli, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "forebay", *argv],
        cwd=cli.cwd,
        env=cli.env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "args", "words"),
    [
        ({"FOREBAY_COMPLETED_RETENTION": "an hour"}, [], "FOREBAY_COMPLETED_RETENTION"),
        ({"FOREBAY_SHUTDOWN_GRACE_S": "-1"}, [], "shutdown_grace_s"),
        ({"FOREBAY_PRUNE_EVERY_S": "0"}, [], "prune_every_s"),
        ({"FOREBAY_BURST": "maybe"}, [], "FOREBAY_BURST"),
    ],
)
def test_bad_worker_settings_fail_in_one_line(
    sqlite_settings_cli: Cli, env: dict[str, str], args: list[str], words: str
) -> None:
    done = sqlite_settings_cli("worker", "limits:app", "--burst", *args, env=env)
    assert done.returncode == 2, done.stderr
    assert words in one_error_line(done)


def test_a_negative_retention_flag_is_refused(sqlite_settings_cli: Cli) -> None:
    done = sqlite_settings_cli("worker", "limits:app", "--dead-retention", "-5")
    assert done.returncode == 2
    assert "--dead-retention" in done.stderr


def test_enqueue_gives_one_job_its_own_limits(settings_cli: Cli) -> None:
    cli = settings_cli
    assert cli.url is not None
    once = cli.json("enqueue", "flaky", "{}", "--max-attempts", "1", "--timeout", "2.5")
    assert (once["max_attempts"], once["timeout_s"]) == (1, 2.5)
    twice = cli.json("enqueue", "flaky", "{}", "--max-attempts", "2")
    default = cli.json("enqueue", "flaky", "{}")
    assert default["max_attempts"] is None and default["timeout_s"] is None
    cli.ok("worker", "limits:app", "--burst")
    attempts = {}
    for job in (once, twice, default):
        stored = asyncio.run(_get(cli.url, job["id"]))
        assert stored.state == JobState.DEAD
        attempts[job["id"]] = stored.attempt
    assert list(attempts.values()) == [1, 2, 5]
    shown = cli.ok("job", str(once["id"]))
    assert "max attempts" in shown and "2.5s" in shown


async def _get(url: str, job_id: int) -> Job:
    async with Forebay(url) as app:
        return await app.get_job(job_id)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-attempts", "0"], "--max-attempts"),
        (["--max-attempts", "1001"], "--max-attempts"),
        (["--timeout", "0"], "--timeout-s"),
        (["--timeout-s", "nan"], "--timeout-s"),
        (["--timeout", "700000"], "--timeout-s"),
    ],
)
def test_enqueue_refuses_bad_limits_and_stores_nothing(
    sqlite_settings_cli: Cli, args: list[str], words: str
) -> None:
    done = sqlite_settings_cli("enqueue", "flaky", "{}", *args)
    assert done.returncode == 2
    assert words in done.stderr
    assert "Traceback" not in done.stderr
    # refused before the store was opened: it was not even created
    stats = sqlite_settings_cli("stats", "--json")
    assert stats.returncode != 0 and "the file does not exist" in stats.stderr
