"""``forebay job --wait`` and ``forebay job --queue Q --key K``, as subprocesses on every backend.

The job a waiting command watches is finished by this test's own process: the command is woken
across processes (on SQLite by its poll).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from forebay import Forebay
from forebay.job import Failure
from tests.acceptance.test_cli import Cli, _drop, one_error_line


@pytest.fixture
def cli(tmp_path: Path, url: str) -> Iterator[Cli]:
    yield Cli(tmp_path, url)
    if not url.startswith("sqlite"):
        asyncio.run(_drop(url))


async def _finish(url: str, job_id: int, how: str) -> None:
    async with Forebay(url) as app:
        if how == "cancel":
            assert await app.cancel(job_id) == [job_id]
            return
        [job] = await app.backend.lease(queue="documents", limit=1, worker_id="t", lease_s=60)
        assert job.id == job_id
        if how == "complete":
            assert await app.backend.complete([job.lease]) == []
        else:
            assert await app.backend.dead_letter([Failure(job.lease, "no", "PermanentError")]) == []


@pytest.mark.parametrize(
    ("how", "state", "code"),
    [("complete", "completed", 0), ("dead", "dead", 3), ("cancel", "cancelled", 4)],
)
def test_job_wait_prints_the_finished_job_and_exits_by_its_state(
    cli: Cli, url: str, how: str, state: str, code: int
) -> None:
    job = cli.json("enqueue", "documents", '{"n": 1}')
    waiting = cli.start("job", str(job["id"]), "--wait", "--json")
    asyncio.run(_finish(url, job["id"], how))
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == code, err
    shown = json.loads(out)
    assert shown["id"] == job["id"] and shown["state"] == state


def test_job_wait_gives_up_after_its_timeout(cli: Cli) -> None:
    job = cli.json("enqueue", "documents", '{"n": 1}')
    done = cli("job", str(job["id"]), "--wait", "--timeout", "0.5", "--json")
    assert done.returncode == 5, done.stderr
    assert json.loads(done.stdout)["state"] == "queued"
    assert done.stderr.strip() == f"job {job['id']} is still queued after 0.5s"
    table = cli("job", str(job["id"]), "--wait", "--timeout", "0")
    assert table.returncode == 5 and "queued" in table.stdout


def test_job_by_queue_and_key(cli: Cli, url: str) -> None:
    first = cli.json("enqueue", "documents", '{"n": 1}', "--key", "doc-1")
    other = cli.json("enqueue", "reports", '{"n": 2}', "--key", "doc-1")
    cli.json("enqueue", "documents", '{"n": 3}', "--key", "doc-2")
    shown = cli.json("job", "--queue", "documents", "--key", "doc-1")
    assert (shown["id"], shown["queue"], shown["payload"]) == (first["id"], "documents", {"n": 1})
    assert cli.json("job", "-q", "reports", "--key", "doc-1")["id"] == other["id"]
    assert "doc-1" in cli.ok("job", "--queue", "reports", "--key", "doc-1")

    waiting = cli.start("job", "--queue", "documents", "--key", "doc-1", "--wait", "--json")
    asyncio.run(_finish(url, first["id"], "complete"))
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads(out)["state"] == "completed"

    missing = cli("job", "--queue", "documents", "--key", "doc-3")
    assert missing.returncode == 1
    assert "no job with key 'doc-3' on queue 'documents'" in one_error_line(missing)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["job"], "give a job's ID, or --queue and --key"),
        (["job", "--queue", "documents"], "give a job's ID, or --queue and --key"),
        (["job", "--key", "k"], "give a job's ID, or --queue and --key"),
        (["job", "1", "--key", "k"], "not both"),
        (["job", "1", "--timeout", "5"], "--timeout goes with --wait"),
    ],
)
def test_job_options_that_do_not_go_together(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    done = Cli(tmp_path, f"sqlite:///{tmp_path / 'forebay.db'}")(*args)
    assert done.returncode == 2
    assert expected in one_error_line(done)
