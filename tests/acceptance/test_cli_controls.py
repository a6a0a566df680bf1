"""Operator controls through the ``forebay`` command, on every backend: ``queue pause|resume|
set|ls``, ``stats`` showing a paused queue, ``cancel`` by filter with ``--dry-run``, a
re-cancel answering as HTTP does, and ``job ID --run-now``."""

from __future__ import annotations

import json

from tests.acceptance.test_cli import Cli, cli, one_error_line, store_url  # noqa: F401


def test_pause_resume_and_stats(cli: Cli) -> None:  # noqa: F811
    ids = [cli.json("enqueue", "documents", "{}")["id"] for _ in range(2)]
    assert "queue documents paused" in cli.ok("queue", "pause", "documents")
    # a paused queue is shown, and no worker leases it; enqueues are still accepted
    [row] = cli.json("stats")
    assert row["paused"] is True and row["queued"] == 2
    assert "documents (paused)" in cli.ok("stats")
    cli.ok("enqueue", "documents", "{}")
    assert cli.json("worker", "app:app", "--queue", "documents", "--burst")["processed"] == 0
    listed = {s["queue"]: s for s in cli.json("queue", "ls")}
    assert listed["documents"]["paused"] is True
    assert listed["limited"]["max_depth"] == 1  # the app's worker stored its declaration
    resumed = cli.json("queue", "resume", "documents")
    assert resumed["paused"] is False
    assert cli.json("worker", "app:app", "--queue", "documents", "--burst")["processed"] == 3
    assert {cli.json("job", str(i))["state"] for i in ids} == {"completed"}
    # an empty paused queue is listed by stats too
    cli.ok("queue", "pause", "reports")
    paused = {r["queue"]: r["paused"] for r in cli.json("stats")}
    assert paused == {"documents": False, "reports": True}


def test_queue_set_max_depth_holds_for_every_producer(cli: Cli) -> None:  # noqa: F811
    saved = cli.json("queue", "set", "reports", "--max-depth", "2")
    assert saved["max_depth"] == 2
    cli.ok("enqueue", "reports", "{}")
    cli.ok("enqueue", "reports", "{}")
    full = cli("enqueue", "reports", "{}")  # no --app: the stored limit applies
    assert "is full" in one_error_line(full) and full.returncode == 1
    usage = cli("queue", "set", "reports")
    assert "nothing to set" in one_error_line(usage) and usage.returncode == 2
    bad = cli("queue", "set", "reports", "--max-depth", "0")
    assert bad.returncode == 2
    cli.ok("queue", "set", "reports", "--no-max-depth")
    cli.ok("enqueue", "reports", "{}")


def test_cancel_by_filter_dry_run_counts_what_it_cancels(cli: Cli) -> None:  # noqa: F811
    for _ in range(4):
        cli.ok("enqueue", "documents", "{}")
    keep = cli.json("enqueue", "reports", "{}")["id"]
    dry = cli.json("cancel", "--queue", "documents", "--state", "queued", "--dry-run")
    assert dry == {"cancelled": 4, "dry_run": True}
    assert cli.ok("cancel", "--queue", "reports", "--dry-run").strip() == "would cancel 1 job"
    assert len(cli.json("jobs", "--state", "queued")) == 5  # nothing changed
    done = cli.json("cancel", "--queue", "documents", "--state", "queued")
    assert done == {"cancelled": 4, "dry_run": False}
    assert cli.ok("cancel", "--queue", "documents").strip() == "cancelled 0 jobs"
    assert cli.json("job", str(keep))["state"] == "queued"
    for args, expected in (
        (("cancel",), "nothing to cancel"),
        (("cancel", "1", "--queue", "documents"), "not both"),
        (("cancel", "--state", "dead", "--queue", "documents"), "only waiting, queued or running"),
    ):
        wrong = cli(*args)
        assert expected in one_error_line(wrong) and wrong.returncode == 2


def test_run_now_and_its_refusal(cli: Cli) -> None:  # noqa: F811
    later = cli.json("enqueue", "documents", "{}", "--delay-s", "3600")
    assert later["run_at"] > later["created_at"]
    moved = cli.json("job", str(later["id"]), "--run-now")
    assert moved["run_at"] < later["run_at"]
    assert "is due now" in cli.ok("job", str(later["id"]), "--run-now")
    assert cli.json("worker", "app:app", "--queue", "documents", "--burst")["processed"] == 1
    refused = cli("job", str(later["id"]), "--run-now")
    line = one_error_line(refused)
    assert refused.returncode == 1
    assert line == f"error: job {later['id']} is completed; only queued jobs can run now"
    assert json.loads(cli.ok("job", str(later["id"]), "--json"))["state"] == "completed"
