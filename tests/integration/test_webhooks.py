"""Webhook deliveries against a real HTTP receiver on this host: signed per Standard Webhooks
(checked with the ``standardwebhooks`` package's own verifier), retried, dead, refused, timed
out; and the receiver example of docs/webhooks.md verifying a real delivery.

The receiver is a real HTTP server on 127.0.0.1, so the deliveries that should reach it allow
private addresses; the one that should not uses the default settings. The worker runs in burst
mode (drains and returns); a retry is made due with ``run_now`` instead of waiting it out.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from forebay import Forebay, Job, JobFilter, JobState, WebhookSettings
from forebay.errors import ConfigError
from forebay.execution.pool import HandlerPool
from forebay.runs import JOB_WEBHOOK_TYPES, WEBHOOK_QUEUE, webhook_payload
from forebay.worker import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"forebay-test-secret-32-bytes-ok!").decode()


class Receiver:
    """A real HTTP server that records every request and answers as planned: a status, or
    ``"hang"`` (no answer until :meth:`release`)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.plan: list[int | str] = []
        self._released = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.received.append((self.path, dict(self.headers), body))
                answer = owner.plan.pop(0) if owner.plan else 204
                if answer == "hang":
                    owner._released.wait(30)
                    return
                assert isinstance(answer, int)
                self.send_response(answer)
                if answer in (301, 302):
                    self.send_header("location", "/elsewhere")
                text = b"boom" if answer >= 500 else b""
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?src=forebay"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def verified(self, index: int = -1) -> dict[str, object]:
        """The event of a received delivery, checked by the standardwebhooks verifier."""
        _path, headers, body = self.received[index]
        event: dict[str, object] = standardwebhooks.Webhook(SECRET).verify(body, headers)
        return event


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    try:
        yield made
    finally:
        made.close()


def make_app(tmp_path: Path, *, timeout_s: float = 10.0, allow_private: bool = True) -> Forebay:
    settings = WebhookSettings(secret=SECRET, timeout_s=timeout_s, allow_private=allow_private)
    return Forebay(f"sqlite:///{tmp_path / 'forebay.db'}", webhooks=settings)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Forebay]:
    made = make_app(tmp_path)
    try:
        yield made
    finally:
        await made.close()


async def deliver(app: Forebay, url: str, data: dict[str, object] | None = None) -> Job:
    """Enqueue one delivery as the stores do, and run the webhooks queue until idle."""
    job = await app.enqueue(
        WEBHOOK_QUEUE, webhook_payload(url, "job.completed", data or {"id": 7, "state": "ok"})
    )
    await app.run_worker([WEBHOOK_QUEUE], burst=True)
    return await app.get_job(job.id)


async def test_a_delivery_is_signed_per_standard_webhooks(app: Forebay, receiver: Receiver) -> None:
    job = await deliver(app, receiver.url, {"id": 7, "state": "completed", "result": [1, "ü"]})
    assert job.state is JobState.COMPLETED and job.result == {"status": 204}
    [(path, headers, body)] = receiver.received
    assert path == "/hooks?src=forebay"
    event = receiver.verified()
    assert event["type"] == "job.completed"
    assert event["data"] == {"id": 7, "state": "completed", "result": [1, "ü"]}
    sent_at = datetime.fromisoformat(str(event["timestamp"]))
    assert sent_at.tzinfo is not None
    assert abs(sent_at.timestamp() - int(headers["webhook-timestamp"])) < 2
    assert headers["webhook-id"] == f"msg_{job.id}"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == httpx.URL(receiver.url).netloc.decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        other = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
        standardwebhooks.Webhook(other).verify(body, headers)


async def test_an_error_answer_is_retried_with_the_same_id_then_completes(
    app: Forebay, receiver: Receiver
) -> None:
    receiver.plan = [500, 200]
    job = await deliver(app, receiver.url)
    assert job.state is JobState.QUEUED and job.attempt == 1
    assert job.error is not None and "answered 500: boom" in job.error
    assert job.run_at is not None and job.run_at > job.created_at  # backing off
    await app.run_now(job.id)
    await app.run_worker([WEBHOOK_QUEUE], burst=True)
    done = await app.get_job(job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 2
    assert done.result == {"status": 200}
    assert len(receiver.received) == 2
    first, second = (headers["webhook-id"] for _, headers, _ in receiver.received)
    assert first == second == f"msg_{job.id}"
    assert receiver.verified(0)["data"] == receiver.verified(1)["data"]


async def test_410_gone_is_dead_at_once(app: Forebay, receiver: Receiver) -> None:
    receiver.plan = [410]
    job = await deliver(app, receiver.url)
    assert job.state is JobState.DEAD and job.attempt == 1
    assert job.error_type == "PermanentError"
    assert "410 Gone" in (job.error or "")
    assert len(receiver.received) == 1


async def test_a_redirect_is_not_followed(app: Forebay, receiver: Receiver) -> None:
    receiver.plan = [302]
    job = await deliver(app, receiver.url)
    assert [path for path, _, _ in receiver.received] == ["/hooks?src=forebay"]
    assert job.state is JobState.QUEUED and "answered 302" in (job.error or "")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_private_address_is_refused_by_default(
    tmp_path: Path, receiver: Receiver, host: str
) -> None:
    async with make_app(tmp_path, allow_private=False) as app:
        job = await deliver(app, receiver.url.replace("127.0.0.1", host))
    assert job.state is JobState.DEAD and job.attempt == 1
    assert f"refused to deliver to {host}: it resolves to " in (job.error or "")
    assert "a loopback address" in (job.error or "")
    assert "FOREBAY_WEBHOOK_ALLOW_PRIVATE=true" in (job.error or "")
    assert receiver.received == []


async def test_a_receiver_that_does_not_answer_in_time_is_retried(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.plan = ["hang"]
    async with make_app(tmp_path, timeout_s=0.3) as app:
        job = await deliver(app, receiver.url)
    receiver.release()
    assert job.state is JobState.QUEUED and job.attempt == 1
    assert "did not answer within 0.3s (FOREBAY_WEBHOOK_TIMEOUT_S)" in (job.error or "")


async def test_without_a_secret_deliveries_are_dead_naming_the_variable(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FOREBAY_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("FOREBAY_WEBHOOK_ALLOW_PRIVATE", "true")
    async with Forebay(f"sqlite:///{tmp_path / 'forebay.db'}") as app:
        job = await deliver(app, receiver.url)
    assert job.state is JobState.DEAD
    assert "FOREBAY_WEBHOOK_SECRET is not set" in (job.error or "")
    assert receiver.received == []


async def test_settings_come_from_the_environment(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREBAY_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("FOREBAY_WEBHOOK_ALLOW_PRIVATE", "true")
    async with Forebay(f"sqlite:///{tmp_path / 'forebay.db'}") as app:
        job = await deliver(app, receiver.url)
    assert job.state is JobState.COMPLETED
    assert receiver.verified()["type"] == "job.completed"


async def test_bad_settings_make_deliveries_dead_saying_what_is_wrong(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREBAY_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("FOREBAY_WEBHOOK_TIMEOUT_S", "soon")
    async with Forebay(f"sqlite:///{tmp_path / 'forebay.db'}") as app:
        job = await deliver(app, receiver.url)
    assert job.state is JobState.DEAD
    assert "FOREBAY_WEBHOOK_TIMEOUT_S='soon' is not a number" in (job.error or "")


async def test_a_job_that_is_not_a_delivery_is_dead(app: Forebay) -> None:
    job = await app.enqueue(WEBHOOK_QUEUE, {"to": "somewhere"})
    await app.run_worker([WEBHOOK_QUEUE], burst=True)
    dead = await app.get_job(job.id)
    assert dead.state is JobState.DEAD and "not a webhook delivery" in (dead.error or "")


@pytest.mark.parametrize(
    ("secret", "problem"),
    [("whsec_c2hvcnQ=", "too short"), ("whsec_not base64!", "not base64"), ("", "not base64")],
)
def test_a_malformed_secret_is_refused(secret: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        WebhookSettings(secret=secret)


async def test_every_worker_of_the_app_delivers_unless_given_its_queues(
    app: Forebay, receiver: Receiver
) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> None:
        pass

    assert sorted(app.worker().queues) == ["docs", WEBHOOK_QUEUE]
    assert list(app.worker(["docs"]).queues) == ["docs"]
    assert WEBHOOK_QUEUE not in app.queues  # not open to intake


async def test_a_handler_pool_leaves_deliveries_in_the_worker_process(app: Forebay) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> None:
        pass

    worker = HandlerPool("tests:app", processes=1).worker(app, None, WorkerSettings())
    assert worker.queues["docs"].handler is not handle  # sent to a handler process
    assert worker.queues[WEBHOOK_QUEUE] == app.builtin_queues[WEBHOOK_QUEUE]


async def test_the_receiver_example_verifies_a_real_delivery(app: Forebay, tmp_path: Path) -> None:
    env = {**os.environ, "FOREBAY_WEBHOOK_SECRET": SECRET}
    with subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "webhook_receiver.py"), "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True
        ).start()
        try:
            url = lines.get(timeout=30).split()[-1]
            job = await deliver(app, url, {"id": 1, "state": "completed"})
            assert job.state is JobState.COMPLETED
            msg_id, kind, data = lines.get(timeout=10).rstrip("\n").split(" ", 2)
            assert (msg_id, kind) == (f"msg_{job.id}", "job.completed")
            assert json.loads(data) == {"id": 1, "state": "completed"}
            forged = httpx.post(
                url,
                content=b'{"type":"job.completed","data":{}}',
                headers={
                    "webhook-id": "msg_x",
                    "webhook-timestamp": str(int(datetime.now().timestamp())),
                    "webhook-signature": "v1,AAAA",
                },
            )
            assert forged.status_code == 400
        finally:
            process.terminate()


async def test_a_job_with_a_webhook_delivers_its_final_state(
    app: Forebay, receiver: Receiver
) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> dict[str, int]:
        return {"pages": 3}

    job = await app.enqueue("docs", {"doc": 1}, key="doc-1", webhook=receiver.url)
    await app.run_worker(burst=True)
    [(_, headers, _)] = receiver.received
    event = receiver.verified()
    assert event["type"] == JOB_WEBHOOK_TYPES["completed"]
    data = event["data"]
    assert isinstance(data, dict)
    assert data["id"] == job.id and data["state"] == "completed" and data["key"] == "doc-1"
    assert data["queue"] == "docs" and data["result"] == {"pages": 3}
    [delivery] = await app.list_jobs(JobFilter(queue=WEBHOOK_QUEUE))
    assert headers["webhook-id"] == f"msg_{delivery.id}"


async def test_a_run_with_a_webhook_announces_its_completion_once(
    app: Forebay, receiver: Receiver
) -> None:
    @app.handler("docs")
    async def handle(job: Job) -> None:
        pass

    run = await app.start_run(name="import", webhook=receiver.url)
    for i in range(3):
        await app.enqueue("docs", {"i": i}, run=run.id)
    await app.seal_run(run.id)
    await app.run_worker(burst=True)
    [_] = receiver.received
    event = receiver.verified()
    assert event["type"] == "run.completed"
    data = event["data"]
    assert isinstance(data, dict)
    assert data["run_id"] == run.id and data["total"] == 3 and data["completed"] == 3
