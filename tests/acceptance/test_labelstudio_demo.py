"""The Label Studio pipeline as a user runs it: ``forebay serve forebay.contrib.labelstudio:app``
and ``forebay labelstudio demo`` as subprocesses, over real HTTP, into a dataset folder and
staging tables on the real PostgreSQL.

* the newcomer's path: serve, then the demo, then ``datasets`` reads the folder; a second
  demo run says what it did; a service without its secret says so in one line;
* what the docs promise about deletes, revivals and credentials, through the same path:
  every delete lands, creates and deletes racing in concurrent batches end deleted, a task id
  Label Studio reuses comes back to life, no credential is stored anywhere, and replaying
  every sample body in any order, concurrently, twice, ends in the same tables.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from forebay.contrib.labelstudio import samples
from forebay.testing import wait_until
from tests.integration.test_labelstudio_helpers import (  # noqa: F401 (fixture)
    EPOCH,
    INVITE_TOKEN,
    annotation_created,
    annotations_deleted,
    current_view,
    dataset_rows,
    fetch,
    liveness,
    ls_annotation,
    ls_project,
    ls_task,
    project_deleted,
    stage_fixture,
    staging_view,
    tasks_created,
    tasks_deleted,
)
from tests.servers import unique_name

SECRET = "demo-secret"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Wait (at most 60 s) until ``predicate()`` holds, checking the service is still up."""
    wait_until(
        predicate,
        timeout_s=60,
        what=what,
        process=proc,
        context=lambda: log.read_text(errors="replace")[-5000:],
    )


def wait_for_health(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, "/healthz", proc, log)


def service_env(
    tmp_path: Path, stage: tuple[str, str], db: str = "forebay.db", **extra: str
) -> dict[str, str]:
    dsn, schema = stage
    env = {
        **os.environ,
        "FOREBAY_URL": f"sqlite:///{tmp_path / db}",
        "FOREBAY_LABELSTUDIO_SECRET": SECRET,
        "FOREBAY_DATASET": str(tmp_path / "dataset"),
        "FOREBAY_DATASET_FLUSH_S": "0",
        "FOREBAY_STAGE_URL": dsn,
        "FOREBAY_STAGE_SCHEMA": schema,
        **extra,
    }
    env.pop("FOREBAY_API_TOKENS", None)
    return env


@dataclass
class Service:
    """A running ``forebay serve forebay.contrib.labelstudio:app``."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    env: dict[str, str]
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def post(self, body: Any) -> list[dict[str, Any]]:
        """Post one webhook body as Label Studio does; the jobs it became."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = self.client.post(
            f"{self.base}/v1/sources/labelstudio",
            content=content,
            headers={"X-Forebay-Secret": SECRET, "Content-Type": "application/json"},
        )
        assert response.status_code in (200, 201), response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    def post_all(self, bodies: list[Any]) -> list[dict[str, Any]]:
        """Post ``bodies`` concurrently (16 at a time)."""
        with ThreadPoolExecutor(16) as pool:
            return [job for jobs in pool.map(self.post, bodies) for job in jobs]

    def counts(self) -> dict[str, Any]:
        queues = self.client.get(f"{self.base}/v1/queues").json()["queues"]
        return next((q for q in queues if q["queue"] == "labelstudio"), {})

    def drain(self) -> None:
        """Wait until every stored Label Studio job is finished; none may be dead."""
        wait_for(
            lambda: self.counts().get("queued", 1) + self.counts().get("running", 1) == 0,
            "the queue to drain",
            self.proc,
            self.log,
        )
        assert self.counts()["dead"] == 0, self.log.read_text(errors="replace")[-5000:]


@contextmanager
def labelstudio_service(tmp_path: Path, env: dict[str, str]) -> Iterator[Service]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forebay",
                "serve",
                "forebay.contrib.labelstudio:app",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = Service(proc, f"http://127.0.0.1:{port}", log, env)
    try:
        wait_for_health(service.base, proc, log)
        yield service
    finally:
        service.client.close()
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text(errors="replace")


def views(tmp_path: Path, stage: tuple[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset's current view and the staging tables, in the same shape."""
    return current_view(tmp_path / "dataset"), asyncio.run(staging_view(*stage))


def live(view: dict[str, Any], table: str) -> set[Any]:
    return {key for key, row in view[table].items() if row["deleted_at"] is None}


# -- the newcomer's path -------------------------------------------------------------------


def run_demo(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forebay", "labelstudio", "demo", "--service", service.base, *args],
        env=service.env,
        cwd=service.log.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_then_demo(tmp_path: Path, stage: tuple[str, str]) -> None:
    dsn, schema = stage
    with labelstudio_service(tmp_path, service_env(tmp_path, stage)) as service:
        unauthorised = httpx.post(f"{service.base}/v1/sources/labelstudio", json={"action": "X"})
        assert unauthorised.status_code == 401
        demo = run_demo(service)
        assert demo.returncode == 0, demo.stdout + demo.stderr + service.log.read_text()
        assert "6 completed" in demo.stdout

    datasets = pytest.importorskip("datasets")
    boxes = datasets.load_dataset(
        str(tmp_path / "dataset"), "pdf_boxes", split="train", cache_dir=str(tmp_path / "cache")
    )
    assert sorted(boxes["label"]) == ["InvoiceNumber", "InvoiceNumber"]  # created, then turned
    rows = asyncio.run(fetch(dsn, schema, "SELECT label, rotation, x1, y1 FROM pdf_boxes"))
    assert rows == [
        {
            "label": "InvoiceNumber",
            "rotation": 90.0,
            "x1": pytest.approx(76.5),
            "y1": pytest.approx(633.6),
        }
    ]


def test_a_second_demo_run_says_it_ran_nothing_and_counts_the_rows(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    dsn, schema = stage
    with labelstudio_service(tmp_path, service_env(tmp_path, stage)) as service:
        # The staging schema is there as soon as the service is, before any event.
        assert asyncio.run(fetch(dsn, schema, "SELECT count(*) AS n FROM extractions")) == [
            {"n": 0}
        ]
        first = run_demo(service, "--deletes")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "already stored" not in first.stdout
        second = run_demo(service, "--deletes")
        assert second.returncode == 0, second.stdout + second.stderr
    # The dataset after the first run: annotation 1 created, updated and deleted; 16 created.
    assert "rows in the dataset" in first.stdout and "annotations 4," in first.stdout
    for run in (first, second):  # annotation 16 live, annotation 1 deleted
        staged = [line for line in run.stdout.splitlines() if "rows in the staging tables" in line]
        assert staged and "annotations 2 (1 deleted)" in staged[0], run.stdout
    posted = [line for line in second.stdout.splitlines() if line.startswith("posted ")]
    assert len(posted) == len(samples.ORDER)
    keyed = [line for line in posted if "send_payload_false" not in line and "DELETED" not in line]
    assert keyed and all("already stored, not run again" in line for line in keyed), second.stdout


def test_the_service_without_its_secret_says_so_in_one_line(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    env = service_env(tmp_path, stage)
    del env["FOREBAY_LABELSTUDIO_SECRET"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "forebay",
            "serve",
            "forebay.contrib.labelstudio:app",
            "--port",
            str(free_port()),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error:") and "FOREBAY_LABELSTUDIO_SECRET" in line


def test_the_demo_outputs_are_ignored_by_git() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("forebay-dataset/data/x.parquet", "forebay.db"):
        found = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert found.returncode == 0, f"{path} is not ignored by .gitignore"


# -- deletes, revivals, credentials ----------------------------------------------------------


def test_every_delete_lands_in_the_dataset_and_the_tables(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    pid = 2
    tasks = [ls_task(t, pid) for t in range(11, 61)]
    annotated = tasks[-10:]  # tasks 51..60 get annotations 151..160
    with labelstudio_service(tmp_path, service_env(tmp_path, stage)) as service:
        service.post(tasks_created(pid, tasks))
        service.post_all(
            [annotation_created(t, ls_annotation(100 + t["id"], t["id"], pid)) for t in annotated]
        )
        service.drain()
        service.post(tasks_deleted(pid, list(range(11, 51))))  # 40 tasks in one body
        service.post(tasks_deleted(pid, [51]))  # its annotation 151 goes with it
        service.post(annotations_deleted(pid, [152, 153]))
        service.drain()
    root = tmp_path / "dataset"
    for table, column, expected in (
        ("documents", "task_id", list(range(11, 52))),
        ("annotations", "annotation_id", [152, 153]),
    ):
        deletes = [r for r in dataset_rows(root, table) if r["op"] == "delete"]
        assert sorted(r[column] for r in deletes) == expected
        ids = [r["change_id"] for r in deletes]
        assert all(ids) and len(set(ids)) == len(ids)
    dataset, staging = views(tmp_path, stage)
    assert live(dataset, "documents") == set(range(52, 61))
    assert live(dataset, "annotations") == set(range(154, 161))
    assert {aid for aid, _ in live(dataset, "extractions")} == set(range(154, 161))
    assert liveness(dataset) == liveness(staging)


CREDENTIALS = {
    "aws": "AKIA-secret-value-1",
    "header": "secret-value-2-header",
    "api": "secret-value-3-api",
    "private": "secret-value-4-private",
    "refresh": "secret-value-5-refresh",
    "session": "secret-value-6-session",
    "client": "secret-value-7-client",
    "authorization": "Bearer secret-value-8",
    "password": "secret-value-9-password",
    "unknown": "secret-value-10-unknown",
    "cookie": "secret-value-11-cookie",
}


def credential_laden_bodies(pid: int) -> list[dict[str, Any]]:
    """Credentials under nested and oddly named keys, beside data that must be kept."""
    c = CREDENTIALS
    data = {
        "doc_id": "doc-with-secrets",
        "pages": ["/p1.png"],
        "storage": {"aws_secret_access_key": c["aws"], "bucket": "kept-bucket"},
        "headers": {"X-Forebay-Secret": c["header"], "Accept": "kept-accept"},
        "apiKey": c["api"],
        "nested": [{"Private-Key": c["private"]}, {"refreshToken": c["refresh"]}],
        "tokens": ["kept", "tokens"],
        "author": "kept-author",
    }
    task = ls_task(70, pid, data=data)
    task["meta"] = {"SESSION.ID": c["session"], "origin": "kept-origin"}
    annotation = ls_annotation(170, 70, pid)
    annotation["result"][0]["value"]["client.Secret"] = c["client"]
    annotation["result"][1]["meta"] = {"AUTHORIZATION": c["authorization"]}
    annotation["db_password"] = c["password"]
    second = ls_task(71, pid, data={"doc_id": "d71", "Set-Cookie": c["cookie"]})
    return [
        tasks_created(pid, [second]),
        annotation_created(task, annotation),
        {"action": "WEBHOOK_SENT", "config": {"X-Api-Key": c["unknown"], "kept": "kept-config"}},
    ]


def test_no_credential_reaches_the_job_store_the_dataset_or_the_tables(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    with labelstudio_service(tmp_path, service_env(tmp_path, stage)) as service:
        service.post_all(credential_laden_bodies(3))
        service.drain()
        stored = service.client.get(f"{service.base}/v1/jobs", params={"queue": "labelstudio"})
        payloads = json.dumps([job["payload"] for job in stored.json()["jobs"]])
    dataset = {
        str(shard): pq.read_table(shard).to_pylist()
        for shard in (tmp_path / "dataset").rglob("*.parquet")
    }
    tables = {
        table: asyncio.run(fetch(*stage, f"SELECT * FROM {table}"))
        for table in ("projects", "documents", "annotations", "extractions", "pdf_boxes")
    }
    job_store = b"".join(p.read_bytes() for p in tmp_path.glob("forebay.db*"))
    for where, text in (("jobs", payloads), ("dataset", repr(dataset)), ("tables", repr(tables))):
        for name, value in CREDENTIALS.items():
            assert value not in text, f"{name} credential in the {where}"
        assert INVITE_TOKEN not in text
    for value in [*CREDENTIALS.values(), INVITE_TOKEN]:
        assert value.encode() not in job_store
    # What only looks like a credential is kept.
    for kept in ("kept-bucket", "kept-accept", "kept-author", "kept-origin", "kept-config"):
        assert kept in payloads and kept in repr(dataset)
    assert '"tokens": ["kept", "tokens"]' in repr(tables["documents"])


def test_creates_and_deletes_in_concurrent_batches_end_deleted(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    """150 annotations created and deleted, 150 tasks created and their project deleted, all
    posted at once: every handler call its own transaction, 16 at a time."""
    env = service_env(
        tmp_path,
        stage,
        FOREBAY_LABELSTUDIO_BATCH_SIZE="1",
        FOREBAY_LABELSTUDIO_CONCURRENCY="16",
    )
    rng = random.Random(16)
    bodies: list[dict[str, Any]] = []
    for i in range(150):
        task = ls_task(1000 + i, 4)
        bodies.append(annotation_created(task, ls_annotation(5000 + i, 1000 + i, 4)))
        bodies.append(annotations_deleted(4, [5000 + i]))
    tasks = [ls_task(2000 + i, 5) for i in range(150)]
    bodies.extend(tasks_created(5, [task]) for task in tasks)
    # The project goes while its tasks arrive: after most of them were posted.
    bodies.insert(len(bodies) - 20, project_deleted(5))
    shuffled = bodies[:300]
    rng.shuffle(shuffled)
    with labelstudio_service(tmp_path, env) as service:
        service.post_all(shuffled + bodies[300:])
        service.drain()
    dataset, staging = views(tmp_path, stage)
    for view in (staging, dataset):
        assert live(view, "annotations") == set()
        assert live(view, "extractions") == set()
        assert live(view, "pdf_boxes") == set()
        assert {t for t in live(view, "documents") if t >= 2000} == set()
    assert liveness(dataset) == liveness(staging)
    assert len(staging["extractions"]) == 300  # each annotation's two regions


def test_a_task_id_label_studio_reuses_comes_back_to_life(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    """Label Studio on SQLite gives a new task the id of a deleted one."""
    pid = 6
    with labelstudio_service(tmp_path, service_env(tmp_path, stage)) as service:
        old = ls_task(4, pid, data={"doc_id": "old"})
        service.post(tasks_created(pid, [old, ls_task(5, pid)]))
        service.post(annotation_created(old, ls_annotation(40, 4, pid)))
        service.drain()
        service.post(tasks_deleted(pid, [4, 5]))
        service.drain()

        # Imported after the delete: the same ids, a later created_at.
        now = datetime.now(UTC)
        new = ls_task(4, pid, created_at=now, data={"doc_id": "new"})
        service.post(tasks_created(pid, [new]))
        service.post_all(
            [
                annotation_created(new, ls_annotation(40, 4, pid, created_at=now, label="A")),
                annotation_created(new, ls_annotation(41, 4, pid, created_at=now)),
            ]
        )
        service.drain()
        dataset, staging = views(tmp_path, stage)
        for view in (staging, dataset):
            assert live(view, "documents") == {4}
            assert view["documents"][4]["doc_id"] == "new"
            assert live(view, "annotations") == {40, 41}
            assert {aid for aid, _ in live(view, "extractions")} == {40, 41}
            assert view["documents"][5]["deleted_at"] is not None
        assert liveness(dataset) == liveness(staging)

        service.post(tasks_deleted(pid, [4]))  # and deleted again
        service.drain()
    dataset, staging = views(tmp_path, stage)
    for view in (staging, dataset):
        assert live(view, "documents") == set()
        assert live(view, "annotations") == set()
        assert live(view, "extractions") == set()
    assert liveness(dataset) == liveness(staging)


def test_replaying_every_sample_in_any_order_concurrently_twice_ends_the_same(
    tmp_path: Path, stage: tuple[str, str]
) -> None:
    bodies = [samples.raw(name) for name in samples.ORDER]
    in_order = (tmp_path / "in-order", (stage[0], unique_name("stage_test")))
    in_order[0].mkdir()
    try:
        # A reference: each body once, one after another, as Label Studio sent them.
        with labelstudio_service(in_order[0], service_env(in_order[0], in_order[1])) as service:
            for body in bodies:
                service.post(body)
            service.drain()
        reference = views(*in_order)
    finally:
        asyncio.run(fetch(stage[0], "public", f'DROP SCHEMA IF EXISTS "{in_order[1]}" CASCADE'))

    rng = random.Random(7)
    snapshots = []
    for db in ("forebay.db", "fresh.db"):  # the same job store, then one that knows no key
        with labelstudio_service(tmp_path, service_env(tmp_path, stage, db=db)) as service:
            for _ in range(2):
                service.post_all(rng.sample(bodies, len(bodies)))
                service.drain()
                snapshots.append(views(tmp_path, stage))
    first = snapshots[0]
    for later in snapshots[1:]:
        assert later == first
    assert liveness(first[0]) == liveness(first[1]) == liveness(reference[0])
    assert liveness(reference[1]) == liveness(reference[0])
