"""Payload models through the ``forebay`` command, on every backend: ``forebay enqueue --app``
refuses a bad payload (usage exit code, the field errors, nothing stored), and handlers run by
``forebay serve --worker-processes 1`` get the model in their child process.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import httpx

from forebay import Forebay, JobFilter
from forebay.cli.output import EXIT_USAGE
from tests.acceptance.test_cli import Cli, store_url
from tests.acceptance.test_serve import serve, wait_until

__all__ = ["store_url"]  # the fixture, used by name

APP = textwrap.dedent(
    """
    import json, os
    from datetime import datetime
    from pathlib import Path
    from pydantic import BaseModel, Field
    from forebay import Forebay

    app = Forebay()  # FOREBAY_URL, set by the test

    class Order(BaseModel):
        id: int
        qty: int = Field(gt=0)
        placed: datetime

    @app.handler("orders", payload=Order, max_attempts=1)
    async def handle(job):
        Path(f"ran-{job.id}.json").write_text(json.dumps({
            "pid": os.getpid(),
            "type": type(job.payload).__name__,
            "qty": job.payload.qty,
            "placed_year": job.payload.placed.year,
            "shown": job.to_dict()["payload"],
        }))

    @app.handler("plain")
    async def plain(job):
        Path(f"ran-{job.id}.json").write_text(json.dumps({"type": type(job.payload).__name__}))
    """
)

GOOD = {"id": "7", "qty": 2, "placed": "2026-01-02T03:04:05+00:00"}
CANONICAL = {"id": 7, "qty": 2, "placed": "2026-01-02T03:04:05Z"}
BAD = {"id": 8, "qty": 0}


async def _stored(url: str, queue: str) -> list[Any]:
    async with Forebay(url) as app:
        jobs = await app.list_jobs(JobFilter(queue=queue))
        return [j.payload for j in sorted(jobs, key=lambda j: j.id)]


def stored(url: str, queue: str = "orders") -> list[Any]:
    return asyncio.run(_stored(url, queue))


def test_forebay_enqueue_refuses_a_bad_payload_with_its_field_errors(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "app.py").write_text(APP)
    cli = Cli(tmp_path, store_url)
    refused = cli("enqueue", "orders", json.dumps(BAD), "--app", "app:app")
    assert refused.returncode == EXIT_USAGE, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "does not match Order" in refused.stderr
    assert "qty: Input should be greater than 0" in refused.stderr
    assert "placed: Field required" in refused.stderr

    lines = [json.dumps(GOOD), json.dumps(BAD), json.dumps({**GOOD, "id": 9})]
    (tmp_path / "orders.jsonl").write_text("\n".join(lines) + "\n")
    whole = cli("enqueue", "orders", "--file", "orders.jsonl", "--app", "app:app")
    assert whole.returncode == EXIT_USAGE, whole.stderr
    assert "line 2: the payload does not match Order" in whole.stderr
    assert "nothing was enqueued" in whole.stderr
    assert stored(store_url) == []

    one = cli.json("enqueue", "orders", json.dumps(GOOD), "--app", "app:app")
    assert one["payload"] == CANONICAL
    good_lines = [json.dumps({**GOOD, "id": n}) for n in (10, 11)]
    (tmp_path / "good.jsonl").write_text("\n".join(good_lines) + "\n")
    cli.ok("enqueue", "orders", "--file", "good.jsonl", "--app", "app:app")
    # Without --app the command knows no model: the queue's handler refuses it later.
    cli.ok("enqueue", "orders", json.dumps(BAD))
    assert stored(store_url) == [
        CANONICAL,
        {**CANONICAL, "id": 10},
        {**CANONICAL, "id": 11},
        BAD,
    ]


def test_serve_with_worker_processes_hands_the_model_to_the_child(
    tmp_path: Path, store_url: str
) -> None:
    env = {"FOREBAY_URL": store_url, "FOREBAY_WORKER_PROCESSES": "1"}
    with serve(tmp_path, env=env, app=APP) as server:

        def post(queue: str, body: object) -> httpx.Response:
            return httpx.post(f"{server.base}/v1/queues/{queue}/jobs", json=body, timeout=30)

        bad = post("orders", [{"payload": GOOD}, {"payload": BAD}])
        assert bad.status_code == 422, bad.text
        assert {tuple(d["loc"]) for d in bad.json()["error"]["details"]} == {
            ("qty",),
            ("placed",),
        }
        good = post("orders", [{"payload": GOOD}, {"payload": {**GOOD, "qty": 5}}])
        assert good.status_code == 201, good.text
        plain = post("plain", {"payload": BAD})
        assert plain.status_code == 201, plain.text
        ids = [j["id"] for j in good.json()] + [plain.json()["id"]]

        def job(job_id: int) -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(f"{server.base}/v1/jobs/{job_id}").json()
            return body

        for job_id in ids:
            wait_until(lambda i=job_id: job(i)["state"] == "completed", 60, "completion", server)
        ran = [json.loads((tmp_path / f"ran-{i}.json").read_text()) for i in ids]
        assert [r["type"] for r in ran] == ["Order", "Order", "dict"]
        assert [r["qty"] for r in ran[:2]] == [2, 5] and ran[0]["placed_year"] == 2026
        assert ran[0]["shown"] == CANONICAL
        assert ran[0]["pid"] not in (server.proc.pid, os.getpid())
        assert job(ids[0])["payload"] == CANONICAL

        # A payload stored without the check (a producer without the model) is refused in the
        # child, and that refusal is permanent.
        unchecked = asyncio.run(_enqueue_bare(store_url, BAD))
        wait_until(lambda: job(unchecked)["state"] == "dead", 60, "the dead letter", server)
        assert job(unchecked)["error_type"] == "PermanentError"
        assert "does not match Order" in job(unchecked)["error"]
        assert not (tmp_path / f"ran-{unchecked}.json").exists()
    assert len(stored(store_url)) == 3


async def _enqueue_bare(url: str, payload: object) -> int:
    async with Forebay(url) as app:
        return (await app.enqueue("orders", payload)).id
