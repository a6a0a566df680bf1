"""Label Studio pipeline: events/s from HTTP post to rows committed in both sinks, and webhook
ack latency at a fixed request rate while the workers drain.

Starts ``forebay serve forebay.contrib.labelstudio:app`` (workers in-process) on each backend
(SQLite, and PostgreSQL when its module and server are there), with a fresh dataset folder and
fresh staging schema on the PostgreSQL at ``FOREBAY_TEST_PG`` (default 127.0.0.1:5432/test),
then, from this process:

1. **throughput**: posts N ``ANNOTATION_CREATED`` webhooks (~1 KB and ~50 KB bodies, each a new
   annotation) as fast as 64 connections allow and waits until every job is completed — a job
   completes only after its rows are in a dataset shard and committed in PostgreSQL;
2. **drain**: the same events stored beforehand, drained by one in-process worker — the
   handler and both sinks without the HTTP intake in front;
3. **ack latency**: posts at a fixed rate (default 500 requests/s) for a few seconds while the
   workers drain, and reports p50/p99 of the time to the 2xx answer.

    .venv/bin/python benchmarks/labelstudio.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from forebay.contrib.labelstudio import samples

PG = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret"
HEADERS = {"X-Forebay-Secret": SECRET, "Content-Type": "application/json"}


@dataclass
class Result:
    backend: str
    body: str
    events: int
    events_per_s: float
    ack_p50_ms: float = float("nan")
    ack_p99_ms: float = float("nan")
    rate: float = 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def template(body_bytes: int) -> dict[str, Any]:
    """An ANNOTATION_CREATED body of about ``body_bytes``: regions added until it is big enough."""
    body = samples.load("real_annotation_created_rectanglelabels_multipage.json")
    assert isinstance(body, dict)
    body["project"] = {"id": 1, "title": "bench", "updated_at": "2026-01-01T00:00:00Z"}
    annotation = body["annotation"]
    assert isinstance(annotation, dict) and isinstance(annotation["result"], list)
    region = annotation["result"][0]
    results: list[Any] = []
    n = 0
    while True:
        added = copy.deepcopy(region)
        assert isinstance(added, dict)
        added["id"] = f"r{n}"
        results.append(added)
        annotation["result"] = results
        n += 1
        if len(json.dumps(body)) >= body_bytes * 0.95 or (body_bytes < 2000 and n == 1):
            break
    if body_bytes < 2000:  # the smallest realistic body: drop what Label Studio may omit
        task = body["task"]
        assert isinstance(task, dict)
        body["task"] = {k: task[k] for k in ("id", "data", "project", "updated_at", "created_at")}
        for key in ("unique_id", "import_id", "last_action", "parent_prediction", "prediction"):
            annotation.pop(key, None)
    return body


def event(base: dict[str, Any], n: int, run: int) -> bytes:
    body = copy.deepcopy(base)
    annotation_id = run * 10_000_000 + n
    body["annotation"]["id"] = annotation_id
    body["annotation"]["task"] = annotation_id
    body["task"]["id"] = annotation_id
    body["annotation"]["updated_at"] = f"2026-01-01T00:00:{n % 60:02d}.{n:06d}Z"
    return json.dumps(body).encode()


@contextmanager
def serving(backend_url: str, folder: Path, schema: str) -> Iterator[str]:
    port = free_port()
    log = folder / "serve.log"
    env = {
        **os.environ,
        "FOREBAY_URL": backend_url,
        "FOREBAY_LABELSTUDIO_SECRET": SECRET,
        "FOREBAY_DATASET": str(folder / "dataset"),
        "FOREBAY_STAGE_URL": PG,
        "FOREBAY_STAGE_SCHEMA": schema,
        "FOREBAY_LOG_LEVEL": "warning",
    }
    env.pop("FOREBAY_API_TOKENS", None)
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
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("forebay serve did not start:\n" + log.read_text())
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def completed(client: httpx.AsyncClient) -> int:
    counts = (await client.get("/v1/queues")).json()
    queues = counts.get("queues", counts) if isinstance(counts, dict) else counts
    return sum(q.get("completed", 0) for q in queues if q.get("queue") == "labelstudio")


async def wait_completed(client: httpx.AsyncClient, target: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await completed(client) < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {await completed(client)} of {target} jobs completed in time")
        await asyncio.sleep(0.05)


async def throughput(base: str, body_bytes: int, events: int, run: int, done_before: int) -> float:
    shape = template(body_bytes)
    bodies = [event(shape, n, run) for n in range(events)]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(64)

        async def post(body: bytes) -> None:
            async with gate:
                for attempt in range(5):  # a connection dropped under load: send again
                    try:
                        response = await client.post(
                            "/v1/sources/labelstudio", content=body, headers=HEADERS
                        )
                        response.raise_for_status()
                        return
                    except httpx.TransportError:
                        if attempt == 4:
                            raise

        started = time.perf_counter()
        await asyncio.gather(*(post(b) for b in bodies))
        await wait_completed(client, done_before + events, timeout_s=600)
        return events / (time.perf_counter() - started)


async def ack_latency(
    base: str, rate: float, duration_s: float, run: int, done_before: int
) -> tuple[float, float, int]:
    shape = template(1000)
    total = int(rate * duration_s)
    bodies = [event(shape, n, run) for n in range(total)]
    latencies: list[float] = []
    failures: list[bytes] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def post(body: bytes) -> None:
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/sources/labelstudio", content=body, headers=HEADERS
                )
                response.raise_for_status()
            except httpx.HTTPError:
                failures.append(body)
                return
            latencies.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        for n, body in enumerate(bodies):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(body)))
        await asyncio.gather(*tasks)
        if failures:
            print(f"{len(failures)} of {total} paced requests failed (no answer)", file=sys.stderr)
        await wait_completed(client, done_before + total - len(failures), timeout_s=600)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return p50, p99, total


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def drain(url: str, folder: Path, body_bytes: int, events: int, run: int) -> float:
    """The handler and both sinks alone: jobs stored first, then one worker drains them."""
    from forebay.contrib.labelstudio.events import change_key, split_event
    from forebay.contrib.labelstudio.pipeline import build_app
    from forebay.contrib.labelstudio.settings import LabelStudioSettings
    from forebay.job import NewJob

    schema = f"bench_drain_{os.getpid()}"
    settings = LabelStudioSettings(
        secret=SECRET, dataset=str(folder / "drain-dataset"), stage_url=PG, stage_schema=schema
    )
    app = build_app(settings, url=url)
    shape = template(body_bytes)
    jobs = []
    for n in range(events):
        for change in split_event(json.loads(event(shape, n, run))):
            jobs.append(NewJob.create("labelstudio", change, key=change_key(change)))
    try:
        async with app:
            for i in range(0, len(jobs), 1000):
                await app.enqueue_many(jobs[i : i + 1000])
            started = time.perf_counter()
            await app.run_worker(["labelstudio"], burst=True)
            return events / (time.perf_counter() - started)
    finally:
        await drop_schema(schema)


def backends(chosen: list[str], folder: Path) -> dict[str, str]:
    urls = {"sqlite": f"sqlite:///{folder / 'forebay.db'}"}
    if importlib.util.find_spec("forebay.backends.postgres") is not None:
        urls["postgres"] = f"{PG}?schema=bench_queue_{os.getpid()}"
    return {k: v for k, v in urls.items() if k in chosen}


def bench(name: str, url: str, args: argparse.Namespace) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="forebay-bench-ls-") as tmp:
        folder = Path(tmp)
        schema = f"bench_stage_{os.getpid()}_{name}"
        try:
            sizes = [("~1 KB", 1000, args.events_1k), ("~50 KB", 50_000, args.events_50k)]
            for run, (label, size, events) in enumerate(sizes, 20):
                drain_url = url.replace("forebay.db", "drain.db")
                drained = asyncio.run(drain(drain_url, folder, size, events, run))
                results.append(Result(name, f"{label}, drain only", events, drained))
            with serving(url, folder, schema) as base:
                done = 0
                for run, (label, size, events) in enumerate(
                    [("~1 KB", 1000, args.events_1k), ("~50 KB", 50_000, args.events_50k)], 1
                ):
                    rate = asyncio.run(throughput(base, size, events, run, done))
                    done += events
                    actual = len(event(template(size), 0, run))
                    results.append(Result(name, f"{label} ({actual:,} B)", events, rate))
                p50, p99, posted = asyncio.run(
                    ack_latency(base, args.rate, args.duration_s, 9, done)
                )
                results.append(
                    Result(name, "~1 KB, paced", posted, float("nan"), p50, p99, args.rate)
                )
        finally:
            asyncio.run(drop_schema(schema))
            if name == "postgres":
                asyncio.run(drop_schema(f"bench_queue_{os.getpid()}"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--events-1k", type=int, default=20_000)
    parser.add_argument("--events-50k", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=500.0, help="Requests/s for ack latency.")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="Small counts, a few seconds each.")
    args = parser.parse_args()
    if args.quick:
        args.events_1k, args.events_50k, args.duration_s = 3000, 300, 5.0
    chosen = args.backend or ["sqlite", "postgres"]
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in backends(chosen, Path(tmp)).items():
            results.extend(bench(name, url, args))
    print("\n| backend | bodies | events | events/s (post → both sinks) | ack p50 | ack p99 |")
    print("|---|---|---|---|---|---|")
    for r in results:
        rate = f"{r.events_per_s:,.0f}" if r.events_per_s == r.events_per_s else f"@{r.rate:g}/s"
        p50 = f"{r.ack_p50_ms:.1f} ms" if r.ack_p50_ms == r.ack_p50_ms else ""
        p99 = f"{r.ack_p99_ms:.1f} ms" if r.ack_p99_ms == r.ack_p99_ms else ""
        print(f"| {r.backend} | {r.body} | {r.events:,} | {rate} | {p50} | {p99} |")


if __name__ == "__main__":
    main()
