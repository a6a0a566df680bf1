"""Chaos test of runs: a worker process is SIGKILLed every 2 s while runs fan out.

Runs of documents, each started with an ``on_complete`` queue and a webhook to a receiver in the
test, are processed by three worker processes (``runs_chaos_app.py``): every 2 s the test kills
one of them, in turn, and starts it again, until everything is settled (each worker lives 6 s,
a third of it or more spent starting on a busy machine). The documents add children to their
run from their handlers (most after the run was sealed), and some fail for good, fail until
their attempts are spent, fail once, or hang until their worker is killed; a job waiting for a
failed one is cancelled, another is cancelled by hand. The test alone decides that shape, so it
knows every count each run must end with.

Then, on every backend: every run completed, with exactly those counts; exactly one completion
job and one webhook delivery job per run, whatever was killed when; the completion handler's
effect written once per run (it may have run more than once: at-least-once), and the receiver
got that run's ``run.completed`` under one ``webhook-id`` (deliveries are at-least-once too).
Beside the runs, a diamond of dependencies (A → B, C → D) under the same kills: D runs once,
after both B and C, never before.

The kills are the test's one timer; everything else waits on the store's state.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from forebay import Forebay, JobFilter, JobNotFound, JobState, RunState
from forebay.runs import RUN_COMPLETED, WEBHOOK_QUEUE
from tests.acceptance.runs_chaos_app import DOCS, DONE

APP = Path(__file__).with_name("runs_chaos_app.py")
WORKERS = 3
KILL_EVERY_S = 2.0
"""The SIGKILL cadence: one worker killed (and started again) every 2 s, the workers in turn."""
SETTLE_TIMEOUT_S = 90.0
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()

Spec = dict[str, Any]


# -- the shape of the runs -------------------------------------------------------------------------
def doc(path: str, *children: Spec, fail: str | None = None, hang_first: bool = False) -> Spec:
    """A document's payload: its key, the children its handler adds, how it ends."""
    spec: Spec = {"path": path, "children": list(children)}
    if fail is not None:
        spec["fail"] = fail
    if hang_first:
        spec["hang_first"] = True
    return spec


def fanout(name: str) -> list[Spec]:
    """The top-level documents of one run: three roots of three children, the first child of
    each with two grandchildren (18 jobs, 15 of them enqueued by handlers). Root 2 fails for
    good after adding its children; leaves fail for good, fail until their attempts are spent,
    fail once, or hang in their first worker until it is killed."""

    def d(rel: str, *children: Spec, **fate: Any) -> Spec:
        return doc(f"{name}/{rel}", *children, **fate)

    return [
        d(
            "0",
            d("0/0", d("0/0/0"), d("0/0/1")),
            d("0/1", fail="permanent"),
            d("0/2", hang_first=True),
        ),
        d(
            "1",
            d("1/0", d("1/0/0"), d("1/0/1", fail="flaky")),
            d("1/1", fail="broken"),
            d("1/2"),
        ),
        d(
            "2",
            d("2/0", d("2/0/0"), d("2/0/1")),
            d("2/1", fail="flaky"),
            d("2/2"),
            fail="permanent",
        ),
    ]


def outcomes(specs: list[Spec]) -> dict[str, JobState]:
    """The final state of every document of these trees, by key."""
    found: dict[str, JobState] = {}
    for spec in specs:
        dies = spec.get("fail") in ("permanent", "broken")
        found[spec["path"]] = JobState.DEAD if dies else JobState.COMPLETED
        found |= outcomes(spec["children"])
    return found


@dataclass
class Planned:
    """A run as the test started it, and the state every one of its jobs must end in."""

    id: str
    index: int
    states: dict[str, JobState]
    top_level: int
    sealed: bool

    def expected(self) -> tuple[int, int, int, int]:
        """(total, completed, dead, cancelled) once it completed."""
        ends = list(self.states.values())
        return (
            len(ends),
            ends.count(JobState.COMPLETED),
            ends.count(JobState.DEAD),
            ends.count(JobState.CANCELLED),
        )


async def start_run(app: Forebay, index: int, webhook: str, *, seal: bool) -> Planned:
    """Start run ``index`` and enqueue its top-level jobs: the fan-out, a document that fails
    for good and one waiting for it (cancelled when it dies), and one cancelled by hand."""
    run = await app.start_run(
        name=f"chaos {index}",
        key=f"chaos-{index}",
        meta={"index": index},
        on_complete=DONE,
        webhook=webhook,
    )
    name = f"r{index}"
    roots = fanout(name)
    for spec in roots:
        await app.enqueue(DOCS, spec, key=spec["path"], run=run.id)
    gate = await app.enqueue(
        DOCS, doc(f"{name}/gate", fail="permanent"), key=f"{name}/gate", run=run.id
    )
    follower = await app.enqueue(
        DOCS, doc(f"{name}/after-gate"), key=f"{name}/after-gate", run=run.id, after=[gate.id]
    )
    assert follower.state is JobState.WAITING
    later = await app.enqueue(
        DOCS, doc(f"{name}/later"), key=f"{name}/later", run=run.id, delay=3600
    )
    assert await app.cancel(later.id) == [later.id]
    states = outcomes(roots) | {
        f"{name}/gate": JobState.DEAD,
        f"{name}/after-gate": JobState.CANCELLED,
        f"{name}/later": JobState.CANCELLED,
    }
    if seal:
        await app.seal_run(run.id)
    return Planned(run.id, index, states, top_level=len(roots) + 3, sealed=seal)


async def start_diamond(app: Forebay) -> dict[str, int]:
    """A → B, A → C, (B, C) → D, outside any run; B hangs in its first worker until killed."""
    a = await app.enqueue(DOCS, doc("diamond/A"), key="diamond/A")
    b = await app.enqueue(DOCS, doc("diamond/B", hang_first=True), key="diamond/B", after=[a.id])
    c = await app.enqueue(DOCS, doc("diamond/C"), key="diamond/C", after=[a.id])
    d = await app.enqueue(DOCS, doc("diamond/D"), key="diamond/D", after=[b.id, c.id])
    assert [j.state for j in (a, b, c, d)] == [JobState.QUEUED] + [JobState.WAITING] * 3
    return {"A": a.id, "B": b.id, "C": c.id, "D": d.id}


# -- the webhook receiver --------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes

    def signed(self) -> bool:
        """Whether one of its signatures is the Standard Webhooks signature with SECRET."""
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        content = f"{self.webhook_id}.{self.timestamp}.".encode() + self.body
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        given = [s.partition(",")[2] for s in self.signature.split() if s.startswith("v1,")]
        return any(hmac.compare_digest(expected, s) for s in given)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every delivery and answers 204."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:  # its worker was killed in the middle of sending it
                    return
                delivery = Delivery(
                    self.headers.get("webhook-id", ""),
                    self.headers.get("webhook-timestamp", ""),
                    self.headers.get("webhook-signature", ""),
                    body,
                )
                with receiver._lock:
                    receiver.deliveries.append(delivery)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def announced(self) -> set[str]:
        """The ids of the runs whose completion arrived."""
        return {json.loads(d.body)["data"]["run_id"] for d in self.received()}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    try:
        yield endpoint
    finally:
        endpoint.close()


# -- the workers, killed in turn -------------------------------------------------------------------
class Fleet:
    """Worker processes of the chaos app, their output in one log; one killed is started
    again at once."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env, self._log = env, log
        self._out = log.open("ab")
        self.processes = [self._spawn() for _ in range(WORKERS)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(APP)], env=self._env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def kill_and_restart(self, index: int) -> None:
        process = self.processes[index]
        if process.poll() is not None:
            raise AssertionError(
                f"a worker exited by itself ({process.returncode}):\n{self.tail()}"
            )
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.processes[index] = self._spawn()

    def tail(self) -> str:
        return self._log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self._out.close()


async def under_chaos(fleet: Fleet, world: World) -> None:
    """Kill a worker every ``KILL_EVERY_S``, the workers in turn, until the store says
    everything is settled; seal the runs left open once children joined."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    turn = 0
    while not await world.settled():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not settled after {SETTLE_TIMEOUT_S:g}s: {await world.describe()}\n{fleet.tail()}"
            )
        await asyncio.sleep(KILL_EVERY_S)  # the SIGKILL cadence: the one timer
        fleet.kill_and_restart(turn % WORKERS)
        turn += 1
        await world.seal_joined()


# -- the store's side ------------------------------------------------------------------------------
@dataclass
class World:
    """What the test started, and how to read from the store whether it is all settled."""

    app: Forebay
    receiver: Receiver
    runs: list[Planned]
    diamond: dict[str, int]

    async def state_of(self, queue: str, key: str) -> JobState | None:
        try:
            return (await self.app.get_job(queue, key=key)).state
        except JobNotFound:
            return None

    async def run_settled(self, planned: Planned) -> bool:
        run = await self.app.get_run(planned.id)
        return (
            run.state is RunState.COMPLETED
            and await self.state_of(DONE, f"run:{run.id}:complete") is JobState.COMPLETED
            and await self.state_of(WEBHOOK_QUEUE, f"run:{run.id}:webhook") is JobState.COMPLETED
            and run.id in self.receiver.announced()
        )

    async def settled(self) -> bool:
        last = await self.app.get_job(self.diamond["D"])
        if last.state is not JobState.COMPLETED:
            return False
        return all([await self.run_settled(planned) for planned in self.runs])

    async def seal_joined(self) -> None:
        """Seal each open run once a handler added a child to it: its later children join a
        sealed run."""
        for planned in self.runs:
            if not planned.sealed:
                run = await self.app.get_run(planned.id)
                if run.total > planned.top_level:
                    await self.app.seal_run(planned.id)
                    planned.sealed = True

    async def describe(self) -> str:
        runs = [await self.app.get_run(p.id) for p in self.runs]
        return (
            "; ".join(
                f"{r.name}: {r.state} total={r.total} waiting={r.waiting} queued={r.queued} "
                f"running={r.running} completed={r.completed} dead={r.dead} cancelled={r.cancelled}"
                for r in runs
            )
            + f"; announced {len(self.receiver.announced())}"
        )


def _effects_db(path: Path) -> Path:
    db = path / "effects.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")  # three processes write it, none waits on readers
    conn.execute(
        "CREATE TABLE executions (seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT, key TEXT, "
        "event TEXT, pid INTEGER)"
    )
    conn.execute(
        "CREATE TABLE effects (queue TEXT, key TEXT, detail TEXT, PRIMARY KEY (queue, key))"
    )
    conn.commit()
    conn.close()
    return db


def _rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


# -- the test --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_runs_complete_exactly_once_while_workers_are_killed(
    url: str, app: Forebay, receiver: Receiver, tmp_path: Path
) -> None:
    effects = _effects_db(tmp_path)
    runs = [await start_run(app, i, receiver.url, seal=i != 2) for i in range(4)]
    empty = await app.start_run(name="chaos empty", on_complete=DONE, webhook=receiver.url)
    assert (await app.seal_run(empty.id)).state is RunState.COMPLETED
    runs.append(Planned(empty.id, 4, {}, top_level=0, sealed=True))
    world = World(app, receiver, runs, await start_diamond(app))

    env = {
        **os.environ,
        "FOREBAY_URL": url,
        "EFFECTS_DB": str(effects),
        "FOREBAY_WEBHOOK_SECRET": SECRET,
        "FOREBAY_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    fleet = Fleet(env, tmp_path / "workers.log")
    try:
        await under_chaos(fleet, world)
    finally:
        fleet.stop()

    await _assert_runs(world)
    await _assert_completion_jobs(world, effects)
    await _assert_webhook_jobs(world)
    _assert_webhooks(world)
    await _assert_documents(world, effects)
    await _assert_diamond(world, effects)
    for counts in await app.counts():  # nothing left behind anywhere
        assert counts.waiting == counts.queued == counts.running == 0, counts


async def _assert_runs(world: World) -> None:
    for planned in world.runs:
        run = await world.app.get_run(planned.id)
        assert run.state is RunState.COMPLETED, run
        assert (run.total, run.completed, run.dead, run.cancelled) == planned.expected(), run
        assert run.waiting == run.queued == run.running == 0, run
        assert run.sealed_at is not None and run.completed_at is not None
        assert run.created_at <= run.sealed_at <= run.completed_at


async def _assert_completion_jobs(world: World, effects: Path) -> None:
    """Exactly one job on the on_complete queue per run, carrying its summary; its handler's
    effect written once per run (it ran at least once)."""
    jobs = await world.app.list_jobs(JobFilter(queue=DONE), limit=1000)
    assert sorted(j.key or "" for j in jobs) == sorted(f"run:{p.id}:complete" for p in world.runs)
    written = dict(_rows(effects, "SELECT key, detail FROM effects WHERE queue = ?", DONE))
    assert set(written) == {j.key for j in jobs}
    for planned in world.runs:
        key = f"run:{planned.id}:complete"
        job = next(j for j in jobs if j.key == key)
        assert job.state is JobState.COMPLETED and job.run_id is None, job
        summary = job.payload
        assert isinstance(summary, dict)
        assert json.loads(written[key]) == summary
        assert summary["run_id"] == planned.id
        assert summary["meta"] == ({"index": planned.index} if planned.states else {})
        counts = tuple(summary[name] for name in ("total", "completed", "dead", "cancelled"))
        assert counts == planned.expected()


async def _assert_webhook_jobs(world: World) -> None:
    jobs = await world.app.list_jobs(JobFilter(queue=WEBHOOK_QUEUE), limit=1000)
    assert sorted(j.key or "" for j in jobs) == sorted(f"run:{p.id}:webhook" for p in world.runs)
    for job in jobs:
        assert job.state is JobState.COMPLETED, job
        payload = job.payload
        assert isinstance(payload, dict)
        assert payload["url"] == world.receiver.url and payload["type"] == RUN_COMPLETED
        assert job.key == f"run:{payload['data']['run_id']}:webhook"


def _assert_webhooks(world: World) -> None:
    """Exactly one delivery job per run; the receiver got each run's run.completed under one
    webhook-id, signed, and every id it saw carries exactly one run."""
    deliveries = world.receiver.received()
    assert all(d.signed() for d in deliveries), deliveries
    runs_of: dict[str, set[str]] = {}
    ids_of: dict[str, set[str]] = {}
    for delivery in deliveries:
        body = json.loads(delivery.body)
        assert body["type"] == RUN_COMPLETED, body
        run_id = body["data"]["run_id"]
        runs_of.setdefault(delivery.webhook_id, set()).add(run_id)
        ids_of.setdefault(run_id, set()).add(delivery.webhook_id)
    assert all(len(runs) == 1 for runs in runs_of.values()), runs_of
    assert set(ids_of) == {p.id for p in world.runs}
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of


async def _assert_documents(world: World, effects: Path) -> None:
    """Every document ended as planned, each completed one with its effect written once, and
    the kills did land: the jobs that hang in their first worker were delivered again."""
    expected = {"diamond/A", "diamond/B", "diamond/C", "diamond/D"}
    states = {key: JobState.COMPLETED for key in expected}
    for planned in world.runs:
        states |= planned.states
    jobs = await world.app.list_jobs(JobFilter(queue=DOCS), limit=1000)
    assert {j.key: j.state for j in jobs} == states
    done = {key for (key,) in _rows(effects, "SELECT key FROM effects WHERE queue = ?", DOCS)}
    assert done == {key for key, state in states.items() if state is JobState.COMPLETED}
    redelivered = {j.key for j in jobs if j.deliveries >= 2}
    hung = {f"r{p.index}/0/2" for p in world.runs if p.states} | {"diamond/B"}
    assert hung <= redelivered


async def _assert_diamond(world: World, effects: Path) -> None:
    """D ran after B and C had each written their effect, B and C after A; D's effect is
    written once and no execution of D ran beyond its deliveries."""
    rows = _rows(
        effects, "SELECT seq, key, event FROM executions WHERE key LIKE 'diamond/%' ORDER BY seq"
    )

    def first(node: str, event: str) -> int:
        return min(seq for seq, key, e in rows if key == f"diamond/{node}" and e == event)

    assert first("B", "start") > first("A", "effect")
    assert first("C", "start") > first("A", "effect")
    assert first("D", "start") > max(first("B", "effect"), first("C", "effect"))
    d = await world.app.get_job(world.diamond["D"])
    starts = sum(1 for _, key, e in rows if key == "diamond/D" and e == "start")
    assert d.state is JobState.COMPLETED and 1 <= starts <= d.deliveries, d
    b = await world.app.get_job(world.diamond["B"])
    assert b.deliveries >= 2  # B's first worker was killed in the middle of it
