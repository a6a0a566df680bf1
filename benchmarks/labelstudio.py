"""Label Studio pipeline: events/s from HTTP post to rows committed in both sinks, and webhook
ack latency at a fixed request rate while the workers drain.

Starts ``forebay serve forebay.contrib.labelstudio:app --worker-processes N`` (default 1: the
handler in one child process, the intake and the worker's bookkeeping in the service's process;
0 runs everything in one process) on each backend (SQLite, and PostgreSQL when its module and
server are there), with a fresh dataset folder and fresh staging schema on the PostgreSQL at
``FOREBAY_TEST_PG`` (default 127.0.0.1:5432/test), then, from this process:

1. **throughput**: posts N ``ANNOTATION_CREATED`` webhooks (~1 KB and ~50 KB bodies, each a new
   annotation) over 64 keep-alive connections and waits until every job is completed — a job
   completes only after its rows are in a dataset shard and committed in PostgreSQL;
2. **drain**: the same events stored beforehand, drained by one in-process worker — the
   handler and both sinks without the HTTP intake in front;
3. **ack latency**: posts at a fixed rate (default 500 requests/s) for a few seconds while the
   workers drain, and reports p50/p99 from each request's due time to its 2xx answer; meanwhile
   a probe syncs a small file on the same disk every 50 ms and reports how long its syncs took
   (an ack waits for a synced commit, so a slow disk shows in both).

The events are those of a PDF labelling project: each task carries ``data.page_geometry``
(one entry per page, written when the tasks are imported; Letter pages, one turned by /Rotate
and one shown through a CropBox), and each ~50 KB annotation holds ~160 rectangle regions
spread over its 10 pages, so every box is converted to PDF points and written to ``pdf_boxes``
in the dataset and in PostgreSQL. The run counts those rows after the drain and throughput
phases and stops when any is missing.

The load comes from a minimal asyncio HTTP/1.1 client (about 0.1 ms of CPU per ~1 KB request),
so on a small machine the figures measure forebay, not the client. Next to
each figure: CPU milliseconds per event spent by the service (its process and all its
children) and by this client; the machine's PostgreSQL server is not counted. Last, the
figures the speed goals are about, each with its goal and the ratio: the ~50 KB events'
service CPU per event, and the paced ~1 KB phase's service CPU per event and ack p99.

    .venv/bin/python benchmarks/labelstudio.py --quick
    .venv/bin/python benchmarks/labelstudio.py --quick --worker-processes 0   # all in one process
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import httpx
import psutil

from forebay.contrib.labelstudio import samples

PG = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret"
T = TypeVar("T")
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
    cost: Cost | None = None
    disk_sync: tuple[float, float] | None = None  # p99, max (ms) of the probe's fsyncs
    left: int | None = None  # jobs still to do when the last paced request was answered
    kind: str = ""  # "drain", "throughput" or "paced", with the body size: "throughput 50k"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Page geometry as a PDF labelling project writes it into each task when importing (what
# ``geometry.pages_from_pdf`` reads from the PDF): Letter pages, one of them turned by its
# /Rotate (a landscape table) and one shown through a CropBox (a trimmed scan), so every branch
# of the box conversion runs. Page images are rendered at 200 DPI, as ``pdftoppm -r 200`` does.
DPI = 200
PAGES_50K = 10  # ~165 regions, ~16 per page


def page_geometry(index: int) -> dict[str, Any]:
    """Page ``index``'s ``data.page_geometry`` entry (keys left out take their defaults:
    rotate 0, x0 = y0 = 0, MediaBox)."""
    if index % 5 == 3:
        return {"width": 612, "height": 792, "rotate": 90}
    if index % 5 == 4:
        return {"width": 576, "height": 756, "x0": 18, "y0": 18, "box": "CropBox"}
    return {"width": 612, "height": 792}


def image_size(page: dict[str, Any]) -> tuple[int, int]:
    """The page image's pixels (Label Studio's ``original_width``/``original_height``)."""
    width, height = page["width"], page["height"]
    if page.get("rotate", 0) in (90, 270):
        width, height = height, width
    return round(width / 72 * DPI), round(height / 72 * DPI)


def template(body_bytes: int) -> dict[str, Any]:
    """An ANNOTATION_CREATED body of about ``body_bytes`` on a multi-page PDF whose task carries
    ``data.page_geometry``: rectangle regions, spread over the pages at varied places, added
    until it is big enough. Every region becomes an extraction and a ``pdf_boxes`` row."""
    body = samples.load("real_annotation_created_rectanglelabels_multipage.json")
    assert isinstance(body, dict)
    body["project"] = {"id": 1, "title": "bench", "updated_at": "2026-01-01T00:00:00Z"}
    task = body["task"]
    assert isinstance(task, dict)
    pages = 2 if body_bytes < 2000 else PAGES_50K  # the sample's two pages for the small body
    geometry: list[Any] = [page_geometry(i) for i in range(pages)]
    task["data"] = {
        "pages": [f"/data/upload/doc1/p{i + 1}.png" for i in range(pages)],
        "doc_id": "doc1",
        "page_geometry": geometry,
    }
    annotation = body["annotation"]
    assert isinstance(annotation, dict) and isinstance(annotation["result"], list)
    region = annotation["result"][0]
    assert isinstance(region, dict) and region["type"] == "rectanglelabels"
    labels = ["InvoiceNumber", "Total"]
    draw = random.Random(body_bytes)
    results: list[Any] = []
    n = 0
    while True:
        added = copy.deepcopy(region)
        assert isinstance(added, dict)
        added["id"] = f"r{n}"
        page = 1 if pages == 2 else n % pages
        added["item_index"] = page
        added["original_width"], added["original_height"] = image_size(geometry[page])
        width, height = round(draw.uniform(5, 40), 2), round(draw.uniform(1.5, 6), 2)
        added["value"] = {
            "x": round(draw.uniform(0, 100 - width), 2),
            "y": round(draw.uniform(0, 100 - height), 2),
            "width": width,
            "height": height,
            "rotation": 0,
            "rectanglelabels": [labels[n % 2]],
        }
        results.append(added)
        annotation["result"] = results
        n += 1
        if len(json.dumps(body)) >= body_bytes * 0.95 or (body_bytes < 2000 and n == 1):
            break
    annotation["result_count"] = n
    if body_bytes < 2000:  # the smallest realistic body: drop what Label Studio may omit
        body["task"] = {k: task[k] for k in ("id", "data", "project", "updated_at", "created_at")}
        for key in ("unique_id", "import_id", "last_action", "parent_prediction", "prediction"):
            annotation.pop(key, None)
    return body


def regions(body_bytes: int) -> int:
    """Rectangle regions per event of this size: the ``pdf_boxes`` rows each event makes."""
    return len(template(body_bytes)["annotation"]["result"])


def event(base: dict[str, Any], n: int, run: int) -> bytes:
    body = copy.deepcopy(base)
    annotation_id = run * 10_000_000 + n
    body["annotation"]["id"] = annotation_id
    body["annotation"]["task"] = annotation_id
    body["task"]["id"] = annotation_id
    body["annotation"]["updated_at"] = f"2026-01-01T00:00:{n % 60:02d}.{n:06d}Z"
    return json.dumps(body).encode()


@contextmanager
def serving(
    backend_url: str, folder: Path, schema: str, worker_processes: int
) -> Iterator[tuple[str, int]]:
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
                "--worker-processes",
                str(worker_processes),
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
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Poster:
    """A minimal HTTP/1.1 keep-alive client for the load: far cheaper per request than httpx,
    so the figures measure the service, not the client (its CPU is reported with them)."""

    def __init__(self, base: str) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._head = (
            "POST /v1/sources/labelstudio HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
            + "Content-Length: "
        ).encode()

    async def post(self, body: bytes) -> int:
        """Send one webhook; the answer's status (a dropped connection is sent again)."""
        for attempt in range(5):
            # A kept connection may have been closed by the server (idle too long): after a
            # failure, send on a new one.
            if self._idle and attempt == 0:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lowered = head.lower()
                at = lowered.index(b"content-length:") + 15
                length = int(lowered[at : lowered.index(b"\r\n", at)])
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                writer.close()
                if attempt == 4:
                    raise
                continue
            self._idle.append((reader, writer))
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its children so far: the live ones,
    and those that ended (counted by the process that waited for them, on Linux)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        total += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    return total


def stolen_s() -> float:
    """CPU seconds the hypervisor gave to other guests so far (Linux), or NaN."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def python_speed_s() -> float:
    """Seconds this machine takes for a fixed piece of pure Python (1,000,000 additions, best
    of 3): printed before and after the run, so runs on machines (or hours) of different speed
    can be told apart. Steal shows only part of it: shared caches and clock speed vary too."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def client_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def completed(client: httpx.AsyncClient) -> int:
    counts = (await client.get("/v1/queues")).json()
    queues = counts.get("queues", counts) if isinstance(counts, dict) else counts
    return sum(q.get("completed", 0) for q in queues if q.get("queue") == "labelstudio")


async def wait_completed(base: str, target: int, timeout_s: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        deadline = time.monotonic() + timeout_s
        while await completed(client) < target:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"only {await completed(client)} of {target} jobs completed in time"
                )
            await asyncio.sleep(0.05)


@dataclass
class Cost:
    """CPU seconds spent during a phase, per event, in the service and in this client."""

    server_ms: float
    client_ms: float


async def throughput(
    base: str, pid: int, body_bytes: int, events: int, run: int, done_before: int
) -> tuple[float, Cost]:
    shape = template(body_bytes)
    bodies = [event(shape, n, run) for n in range(events)]
    poster = Poster(base)
    server0, client0 = cpu_s(pid), client_cpu_s()
    started = time.perf_counter()
    await post_all(poster, bodies, 64)
    await wait_completed(base, done_before + events, timeout_s=600)
    elapsed = time.perf_counter() - started
    poster.close()
    cost = Cost((cpu_s(pid) - server0) / events * 1000, (client_cpu_s() - client0) / events * 1000)
    return events / elapsed, cost


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (the nearest rank at or below it)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@contextmanager
def disk_sync_probe(folder: Path) -> Iterator[list[float]]:
    """Sync 4 KB to a file in ``folder`` every 50 ms meanwhile; yields the sync times (s).

    An acknowledged job is a synced commit: when the disk is slow to sync (writing back what
    the run wrote before), every sync is, and the probe shows it apart from forebay."""
    times: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        fd = os.open(folder / ".disk-sync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while not stop.wait(0.05):
                started = time.perf_counter()
                os.write(fd, b"x" * 4096)
                os.fsync(fd)
                times.append(time.perf_counter() - started)
        finally:
            os.close(fd)
            os.unlink(folder / ".disk-sync-probe")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield times
    finally:
        stop.set()
        thread.join()


async def post_all(poster: Poster, bodies: list[bytes], connections: int) -> None:
    todo = iter(bodies)

    async def connection() -> None:
        for body in todo:
            status = await poster.post(body)
            if status >= 300:
                raise SystemExit(f"the service answered {status}")

    await asyncio.gather(*(connection() for _ in range(connections)))


async def ack_latency(
    base: str,
    pid: int,
    rate: float,
    duration_s: float,
    run: int,
    done_before: int,
    backlog: int = 0,
) -> tuple[float, float, int, Cost, int, int]:
    """p50/p99 of the time from each request's due time (not its send time: a late send is
    latency too) to its 2xx answer, posting at ``rate`` whatever the answers do. With
    ``backlog``, that many ~50 KB events are posted first (ids of run ``run + 1``), so the
    workers drain them while the paced requests come in. Also returns how many jobs were still
    to do when the last paced request was answered (above 0: the workers drained all along),
    and the count of completed jobs to expect from now on."""
    shape = template(1000)
    total = int(rate * duration_s)
    bodies = [event(shape, n, run) for n in range(total)]
    latencies: list[float] = []
    failures: list[bytes] = []
    poster = Poster(base)
    if backlog:
        big = template(50_000)
        await post_all(poster, [event(big, n, run + 1) for n in range(backlog)], 16)

    async def post(body: bytes, due: float) -> None:
        try:
            status = await poster.post(body)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
        if status >= 300 or status == 0:
            failures.append(body)
            return
        latencies.append(time.perf_counter() - due)

    tasks = []
    server0, client0 = cpu_s(pid), client_cpu_s()
    start = time.perf_counter()
    for n, body in enumerate(bodies):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(body, due)))
    await asyncio.gather(*tasks)
    if failures:
        print(f"{len(failures)} of {total} paced requests failed (no answer)", file=sys.stderr)
    target = done_before + backlog + total - len(failures)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        left = target - await completed(client)
    await wait_completed(base, target, timeout_s=600)
    poster.close()
    cost = Cost((cpu_s(pid) - server0) / total * 1000, (client_cpu_s() - client0) / total * 1000)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    return p50, p99, total, cost, left, target


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def staged_rows(schema: str, table: str) -> int:
    conn = await asyncpg.connect(PG)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{table}"'))
    finally:
        await conn.close()


def dataset_rows(dataset: Path, table: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in (dataset / "data" / table).glob("*.parquet"))


async def check_boxes(what: str, dataset: Path, schema: str, expected: int) -> str:
    """That every rectangle of the events became a ``pdf_boxes`` row in both sinks (else the
    box conversion and those writes were not measured): stops the run when not."""
    staged, written = await staged_rows(schema, "pdf_boxes"), dataset_rows(dataset, "pdf_boxes")
    if staged != expected or written != expected:
        raise SystemExit(
            f"{what}: expected {expected:,} pdf_boxes rows, found {staged:,} in PostgreSQL "
            f"and {written:,} in the dataset: the boxes were not converted and written"
        )
    return f"{what}: {expected:,} pdf_boxes rows in PostgreSQL and in the dataset, as expected"


async def drain(
    url: str, folder: Path, body_bytes: int, events: int, run: int, checks: list[str], name: str
) -> tuple[float, float]:
    """The handler and both sinks alone: jobs stored first, then one worker drains them."""
    from forebay.contrib.labelstudio.events import change_key, split_event
    from forebay.contrib.labelstudio.pipeline import build_app
    from forebay.contrib.labelstudio.settings import LabelStudioSettings
    from forebay.job import NewJob

    schema = f"bench_drain_{os.getpid()}"
    dataset = folder / f"drain-dataset-{run}"
    settings = LabelStudioSettings(
        secret=SECRET, dataset=str(dataset), stage_url=PG, stage_schema=schema
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
            import pyarrow.parquet  # noqa: F401  # a service imports it once, at start: not timed

            started, cpu0 = time.perf_counter(), client_cpu_s()
            await app.run_worker(["labelstudio"], burst=True)
            elapsed, cpu = time.perf_counter() - started, client_cpu_s() - cpu0
        what = f"{name}, drain only, {events:,} events of ~{body_bytes:,} B"
        checks.append(await check_boxes(what, dataset, schema, events * regions(body_bytes)))
        return events / elapsed, cpu / events * 1000
    finally:
        await drop_schema(schema)


def backends(chosen: list[str], folder: Path) -> dict[str, str]:
    urls = {"sqlite": f"sqlite:///{folder / 'forebay.db'}"}
    if importlib.util.find_spec("forebay.backends.postgres") is not None:
        urls["postgres"] = f"{PG}?schema=bench_queue_{os.getpid()}"
    return {k: v for k, v in urls.items() if k in chosen}


def bench(name: str, url: str, args: argparse.Namespace, checks: list[str]) -> list[Result]:
    results = []
    sizes = [("~1 KB", 1000, args.events_1k), ("~50 KB", 50_000, args.events_50k)]
    with tempfile.TemporaryDirectory(prefix="forebay-bench-ls-") as tmp:
        folder = Path(tmp)
        schema = f"bench_stage_{os.getpid()}_{name}"
        try:
            for run, (label, size, events) in enumerate(sizes, 20):
                # A job store of its own: the served run counts completed jobs, and must not
                # count these.
                drain_url = url.replace("forebay.db", "drain.db").replace(
                    "schema=bench_queue_", "schema=bench_drain_queue_"
                )
                drained, cpu_ms = asyncio.run(
                    drain(drain_url, folder, size, events, run, checks, name)
                )
                cost = Cost(cpu_ms, float("nan"))
                results.append(
                    Result(
                        name,
                        f"{label}, drain only",
                        events,
                        drained,
                        cost=cost,
                        kind=f"drain {size // 1000}k",
                    )
                )
            with serving(url, folder, schema, args.worker_processes) as (base, pid):
                done = 0
                for run, (label, size, events) in enumerate(sizes, 1):
                    rate, cost = run_async(throughput(base, pid, size, events, run, done))
                    done += events
                    actual = len(event(template(size), 0, run))
                    boxes = regions(size)
                    body = f"{label} ({actual:,} B, {boxes} box{'es' if boxes > 1 else ''})"
                    kind = f"throughput {size // 1000}k"
                    results.append(Result(name, body, events, rate, cost=cost, kind=kind))
                expected = sum(events * regions(size) for _, size, events in sizes)
                what = f"{name}, served, after the throughput phases"
                checks.append(asyncio.run(check_boxes(what, folder / "dataset", schema, expected)))
                phases = [("~1 KB, paced", 0, 9)]
                if args.backlog_50k:
                    label = f"~1 KB, paced, {args.backlog_50k:,} ~50 KB queued first"
                    phases.append((label, args.backlog_50k, 11))
                for label, backlog, run in phases:
                    with disk_sync_probe(folder) as syncs:
                        p50, p99, posted, cost, left, done = run_async(
                            ack_latency(base, pid, args.rate, args.duration_s, run, done, backlog)
                        )
                    syncs.sort()
                    disk = (percentile(syncs, 0.99) * 1000, syncs[-1] * 1000) if syncs else None
                    results.append(
                        Result(
                            name,
                            label,
                            posted,
                            events_per_s=float("nan"),
                            ack_p50_ms=p50,
                            ack_p99_ms=p99,
                            rate=args.rate,
                            cost=cost,
                            disk_sync=disk,
                            left=left if backlog else None,
                            kind="paced backlog" if backlog else "paced",
                        )
                    )
        finally:
            asyncio.run(drop_schema(schema))
            if name == "postgres":
                asyncio.run(drop_schema(f"bench_queue_{os.getpid()}"))
                asyncio.run(drop_schema(f"bench_drain_queue_{os.getpid()}"))
    return results


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The client runs on uvloop when it is there (it is a forebay dependency off Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--events-1k", type=int, default=20_000)
    parser.add_argument("--events-50k", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=500.0, help="Requests/s for ack latency.")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument(
        "--backlog-50k",
        type=int,
        default=1_500,
        help="~50 KB events queued before a second paced phase, so the workers drain them "
        "while its requests come in (0: no such phase).",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="forebay serve --worker-processes (0: workers in the service's process).",
    )
    parser.add_argument("--quick", action="store_true", help="Small counts, a few seconds each.")
    args = parser.parse_args()
    if args.quick:
        args.events_1k, args.events_50k, args.duration_s = 3000, 300, 5.0
        args.backlog_50k = min(args.backlog_50k, 300)
    chosen = args.backend or ["sqlite", "postgres"]
    results: list[Result] = []
    checks: list[str] = []
    speed0 = python_speed_s()
    stolen0, started = stolen_s(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in backends(chosen, Path(tmp)).items():
            results.extend(bench(name, url, args, checks))
    stolen, elapsed = stolen_s() - stolen0, time.perf_counter() - started
    speed1 = python_speed_s()
    print(f"\nforebay serve --worker-processes {args.worker_processes}; CPU ms per event: the")
    print("service (its process and all its children) and this client; drain only: the")
    print("draining process. Every event's task carries data.page_geometry, so each of its")
    print("boxes is converted to PDF points and written to pdf_boxes in both sinks.\n")
    print(
        "| backend | bodies | events | events/s (post → both sinks) | ack p50 | ack p99 "
        "| service + children CPU ms/event | client CPU ms/event |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        rate = f"{r.events_per_s:,.0f}" if r.events_per_s == r.events_per_s else f"@{r.rate:g}/s"
        p50 = f"{r.ack_p50_ms:.1f} ms" if r.ack_p50_ms == r.ack_p50_ms else ""
        p99 = f"{r.ack_p99_ms:.1f} ms" if r.ack_p99_ms == r.ack_p99_ms else ""
        server = f"{r.cost.server_ms:.2f}" if r.cost else ""
        client = (
            f"{r.cost.client_ms:.2f}" if r.cost and r.cost.client_ms == r.cost.client_ms else ""
        )
        print(
            f"| {r.backend} | {r.body} | {r.events:,} | {rate} | {p50} | {p99} "
            f"| {server} | {client} |"
        )
    for r in results:
        if r.disk_sync is not None:
            print(
                f"\n{r.backend}, {r.body}: a 4 KB write + fsync in the benchmark folder every "
                f"50 ms took p99 {r.disk_sync[0]:.1f} ms, max {r.disk_sync[1]:.1f} ms meanwhile "
                "(an ack waits for one such sync)."
            )
        if r.left is not None:
            still = (
                "the workers drained all along"
                if r.left > 0
                else "the workers caught up before it: raise --backlog-50k"
            )
            print(
                f"{r.backend}, {r.body}: {r.left:,} jobs were still to do when the last paced "
                f"request was answered ({still})."
            )
    print(
        f"\nPython speed: 1,000,000 additions took {speed0 * 1000:.0f} ms before the run and "
        f"{speed1 * 1000:.0f} ms after it (the CPU figures above scale with it)."
    )
    if stolen == stolen:
        print(
            f"\nCPU taken by other tenants of this machine during the run (steal): "
            f"{stolen / elapsed:.2f} of {os.cpu_count()} cores on average (on a shared "
            "machine the figures vary with what the other tenants do)."
        )
    print("\nBoxes checked:")
    for line in checks:
        print(f"- {line}")
    print_goals(results, args.rate)


def print_goals(results: list[Result], rate: float) -> None:
    """The figures the speed goals are about, last: each beside its goal, and figure / goal
    (at most 1 meets it). The 50 KB figure is the served throughput phase's service CPU (its
    process and all its children); the paced ones are the phase without a backlog."""
    print("\nGoals (ratio = measured / goal; at most 1 meets it):")
    for backend in dict.fromkeys(r.backend for r in results):
        by_kind = {r.kind: r for r in results if r.backend == backend}
        big, paced = by_kind.get("throughput 50k"), by_kind.get("paced")
        nan = float("nan")
        goals = [
            ("50 KB event CPU per event", big.cost.server_ms if big and big.cost else nan, 4.0),
            (
                f"1 KB paced {rate:g} req/s service CPU per event",
                paced.cost.server_ms if paced and paced.cost else nan,
                0.7,
            ),
            (f"ack p99 at {rate:g} req/s from due time", paced.ack_p99_ms if paced else nan, 50.0),
        ]
        for label, measured, goal in goals:
            print(
                f"{backend}: {label} (goal ≤ {goal:g} ms): {measured:.2f} ms, "
                f"ratio {measured / goal:.2f}"
            )
    if rate != 500:
        print(f"(the goals are for 500 req/s; this run paced at {rate:g} req/s)")


if __name__ == "__main__":
    main()
