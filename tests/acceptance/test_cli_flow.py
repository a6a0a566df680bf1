"""Flow control from the command line, as subprocesses on a fresh SQLite file (the contract tests
hold every backend to the semantics):

* ``forebay enqueue --tenant/--rate-key/--concurrency-key/--fair-key`` stores them, one job or a
  file of them, and a value that cannot be stored is a usage error that stores nothing;
* ``--tenant`` narrows ``forebay jobs``, ``cancel``, ``dead ls|replay|purge`` and ``runs ls``,
  and ``runs start --tenant`` keeps it;
* ``forebay stats`` shows each queue's limits (stored, else the ``--app``'s), its running jobs
  against its cap and how many due jobs the limits hold back (throttled).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from forebay import Forebay
from forebay.flow import FlowLimits, Rate
from tests.acceptance.test_cli import Cli, one_error_line

APP = """
from forebay import Forebay

app = Forebay()  # FOREBAY_URL, set by the test
app.queue("documents")
app.queue("declared", global_concurrency=3, fair_key="tenant")


@app.handler("reports", max_attempts=1)
async def report(job):
    raise ValueError("cannot render")
"""


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "app.py").write_text(APP)
    return Cli(tmp_path, f"sqlite:///{tmp_path / 'forebay.db'}")


def _ids(jobs: list[dict[str, object]]) -> list[object]:
    return sorted(j["id"] for j in jobs)  # type: ignore[type-var]


def test_enqueue_keeps_the_tenant_and_keys_and_jobs_lists_one_tenant(
    cli: Cli, tmp_path: Path
) -> None:
    acme = cli.json(
        "enqueue",
        "documents",
        '{"n": 1}',
        "--tenant",
        "acme",
        "--rate-key",
        "example.com",
        "--concurrency-key",
        "gpu-1",
        "--fair-key",
        "acme",
    )
    assert (acme["tenant"], acme["rate_key"], acme["concurrency_key"], acme["fair_key"]) == (
        "acme",
        "example.com",
        "gpu-1",
        "acme",
    )
    globex = cli.json("enqueue", "documents", '{"n": 2}', "--tenant", "globex", "--rate-key", "7")
    assert (globex["tenant"], globex["rate_key"], globex["fair_key"]) == ("globex", "7", None)
    nobody = cli.json("enqueue", "documents", '{"n": 3}')
    assert nobody["tenant"] is None
    (tmp_path / "many.jsonl").write_text('{"n": 4}\n{"n": 5}\n')
    many = cli.json("enqueue", "documents", "--file", "many.jsonl", "--tenant", "globex")
    assert many["created"] == 2

    assert _ids(cli.json("jobs", "--tenant", "acme")) == [acme["id"]]
    assert _ids(cli.json("jobs", "--tenant", "globex")) == sorted([globex["id"], *many["ids"]])
    assert len(cli.json("jobs")) == 5
    assert cli.json("jobs", "--tenant", "initech") == []
    table = cli.ok("jobs", "--tenant", "acme").splitlines()
    assert table[0].split()[:4] == ["id", "queue", "tenant", "state"]
    assert table[1].split()[:4] == [str(acme["id"]), "documents", "acme", "queued"]
    shown = cli.ok("job", str(acme["id"]))
    assert "tenant" in shown and "example.com" in shown and "gpu-1" in shown

    assert cli.json("cancel", "--tenant", "globex", "--dry-run") == {
        "cancelled": 3,
        "dry_run": True,
    }
    assert cli.json("cancel", "--tenant", "acme") == {"cancelled": 1, "dry_run": False}
    assert [j["state"] for j in cli.json("jobs", "--tenant", "acme")] == ["cancelled"]
    assert {j["state"] for j in cli.json("jobs", "--tenant", "globex")} == {"queued"}
    assert cli.json("job", str(nobody["id"]))["state"] == "queued"


def test_dead_letters_and_runs_by_tenant(cli: Cli) -> None:
    acme = [cli.json("enqueue", "reports", "{}", "--tenant", "acme")["id"] for _ in range(2)]
    globex = cli.json("enqueue", "reports", "{}", "--tenant", "globex")["id"]
    assert cli.json("worker", "app:app", "--queue", "reports", "--burst")["processed"] == 3

    assert _ids(cli.json("dead", "ls", "--tenant", "acme")) == sorted(acme)
    assert _ids(cli.json("dead", "ls", "--tenant", "globex")) == [globex]
    replayed = cli.json("dead", "replay", "--tenant", "globex")
    assert replayed == {"action": "replay", "dry_run": False, "count": 1}
    assert cli.json("job", str(globex))["state"] == "queued"
    purged = cli.json("dead", "purge", "--tenant", "acme", "--yes")
    assert purged["count"] == 2
    assert cli.json("dead", "ls") == []

    mine = cli.json("runs", "start", "--name", "nightly", "--tenant", "acme")
    theirs = cli.json("runs", "start", "--name", "nightly", "--tenant", "globex")
    assert (mine["tenant"], theirs["tenant"]) == ("acme", "globex")
    assert [r["id"] for r in cli.json("runs", "ls", "--tenant", "acme")] == [mine["id"]]
    assert [r["id"] for r in cli.json("runs", "ls", "--tenant", "globex")] == [theirs["id"]]
    assert len(cli.json("runs", "ls")) == 2
    table = cli.ok("runs", "ls").splitlines()
    assert table[0].split()[:3] == ["id", "name", "tenant"]


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--tenant", "acme corp", "--tenant"),
        ("--tenant", "-acme", "--tenant"),
        ("--rate-key", "", "--rate-key"),
        ("--concurrency-key", "k" * 201, "--concurrency-key"),
        ("--fair-key", "", "--fair-key"),
    ],
)
def test_a_bad_tenant_or_key_is_a_usage_error_that_stores_nothing(
    cli: Cli, tmp_path: Path, option: str, value: str, named: str
) -> None:
    cli.json("migrate")
    one = cli("enqueue", "documents", "{}", f"{option}={value}")
    assert named in one_error_line(one)
    assert one.returncode == 2
    (tmp_path / "jobs.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    many = cli("enqueue", "documents", "--file", "jobs.jsonl", f"{option}={value}")
    assert named in one_error_line(many)
    assert many.returncode == 2
    assert cli.json("jobs") == []


def test_runs_start_refuses_a_bad_tenant(cli: Cli) -> None:
    cli.json("migrate")
    done = cli("runs", "start", "--tenant", "no spaces")
    assert "--tenant" in one_error_line(done) and done.returncode == 2
    assert cli.json("runs", "ls") == []


async def _limit_and_lease(url: str) -> None:
    """Store limits on two queues, as their workers would, and lease what they let start."""
    async with Forebay(url) as app:
        await app.backend.set_queue("capped", limits=FlowLimits(concurrency=2, fair=True))
        await app.backend.set_queue(
            "metered", limits=FlowLimits(rate=Rate.parse("1/h"), concurrency=4)
        )
        capped = await app.backend.lease(queue="capped", limit=5, worker_id="w1", lease_s=600)
        metered = await app.backend.lease(queue="metered", limit=3, worker_id="w2", lease_s=600)
        assert (len(capped), len(metered)) == (2, 1)


def test_stats_shows_limits_running_against_the_cap_and_throttled(cli: Cli) -> None:
    for queue, count in (("capped", 5), ("metered", 3), ("documents", 1)):
        for n in range(count):
            cli.json("enqueue", queue, json.dumps({"n": n}))
    assert cli.url is not None
    asyncio.run(_limit_and_lease(cli.url))

    rows = {row["queue"]: row for row in cli.json("stats")}
    capped, metered, plain = rows["capped"], rows["metered"], rows["documents"]
    assert capped["limits"] == FlowLimits(concurrency=2, fair=True).to_dict()
    assert (capped["running"], capped["queued"], capped["throttled"]) == (2, 3, 3)
    assert metered["limits"]["rate"] == {"count": 1, "period_s": 3600.0, "burst": 1}
    assert metered["limits"]["concurrency"] == 4
    assert (metered["running"], metered["queued"], metered["throttled"]) == (1, 2, 2)
    assert plain["limits"] == FlowLimits().to_dict() and plain["throttled"] == 0

    lines = cli.ok("stats").splitlines()
    header = lines[0].split()
    assert header[:7] == [
        "queue",
        "waiting",
        "queued",
        "scheduled",
        "retrying",
        "running",
        "throttled",
    ]
    assert header[-2:] == ["queued", "limits"]  # "oldest queued", then the limits
    table = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
    assert table["capped"][5:7] == ["2/2", "3"]
    assert " ".join(table["capped"]).endswith("cap 2, fair")
    assert table["metered"][5:7] == ["1/4", "2"]
    assert " ".join(table["metered"]).endswith("rate 1/h, cap 4")
    assert table["documents"][5:7] == ["0", "0"]
    assert table["total"][5:7] == ["3", "5"]


def test_stats_shows_the_apps_declared_limits_until_a_worker_stores_them(cli: Cli) -> None:
    cli.json("enqueue", "declared", "{}", "--tenant", "acme")
    bare = {row["queue"]: row for row in cli.json("stats")}
    assert bare["declared"]["limits"] == FlowLimits().to_dict()  # stored only by a worker
    rows = {row["queue"]: row for row in cli.json("stats", "--app", "app:app")}
    assert rows["declared"]["limits"] == FlowLimits(concurrency=3, fair=True).to_dict()
    line = next(x for x in cli.ok("stats", "--app", "app:app").splitlines() if "declared" in x)
    assert "0/3" in line.split() and line.rstrip().endswith("cap 3, fair")


def test_stats_without_limits_keeps_its_columns(cli: Cli) -> None:
    cli.json("enqueue", "documents", "{}")
    header = cli.ok("stats").splitlines()[0].split()
    assert "throttled" not in header and "limits" not in header
    assert cli.json("stats")[0]["throttled"] == 0
