"""forebay on Redis Streams, beside a raw redis-py loop and the Redis-based peers, in one run.

    python benchmarks/redis.py                                   # forebay + raw redis-py
    python benchmarks/redis.py --peers DIR --peers-python PY     # + RQ, arq, SAQ, Celery, Dramatiq
    python benchmarks/redis.py --quick                           # one repeat, small N: a smoke run
    python benchmarks/redis.py --persistence off                 # only the no-persistence server

By default a private ``redis-server`` is started on a free port and stopped at the end: the peers'
harness empties its database (FLUSHDB) before each run, so it must not be a server anything else
uses. ``--redis-url`` points at another server instead (its database will be flushed; it is
measured once, with whatever persistence it has).

``--persistence`` picks the private server's durability: ``off`` (no AOF, no RDB snapshots, like
the peer harness's server), ``everysec`` (``--appendonly yes --appendfsync everysec``, what
docs/redis.md recommends, the AOF in the run's temporary folder) or ``both`` (the default: two
private servers, one of each, and every repeat runs each part -- raw redis-py, forebay, latency --
on one after the other, in alternating order, so a drift of the machine does not land on one of
them). Each row's system says which server (``forebay [off]``, ``forebay [everysec]``); the peers
and the targets use the first server only. With ``both``, the ratio everysec / off of the main
forebay figures (and of raw redis-py's, for scale) comes last.

Every figure is a median [min-max] of ``--repeats``. Phases:

* ``enqueue 1 caller``: one caller awaiting one ``app.enqueue`` at a time;
* ``enqueue 100 callers``: 100 concurrent callers, each awaiting its own single enqueue (group
  commit: concurrent calls share one script call);
* ``enqueue bulk``: ``app.enqueue_many`` with 1,000 jobs per call;
* ``process no-op, 1 worker process``: a separate worker process drains a backlog of no-op jobs
  (rate = jobs / (last job start - first job start), as the peer harness measures); every run
  checks that exactly N jobs ran, each once; the handler does what the peers' no-op job does:
  one ``O_APPEND`` write of a line to a file per job (so does the latency worker's);
* ``enqueue->start latency``: an idle worker process, single enqueues at 100 jobs/s: p50/p99;
* raw redis-py: XADD one per round trip, XADD pipelined by 100, XREADGROUP + XACK of 100;
* Redis memory (``used_memory``) before, with a backlog, after processing, after pruning.

Beside each rate: CPU seconds per 1,000 jobs of the client process doing the work (for
processing: the worker process, from its first job to the end of its run). The Redis server's
CPU is not counted, nor the peers'. The ratios and the targets come last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This file is named like the redis package: keep its folder off the path while importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
import redis  # noqa: E402

sys.path.append(str(HERE))
from harness import (  # noqa: E402
    Marks,
    Row,
    cpu_per_1k,
    peer_python,
    peers_dir,
    print_ratios,
    print_table,
    ratio_lines,
    run_peer,
)

from forebay import Forebay, Job, NewJob, WorkerSettings  # noqa: E402
from forebay.backends.redis import RedisBackend  # noqa: E402

PAYLOAD = {"doc": "x" * 40}
QUEUE = "bench"

# Peers, each with the size of its runs: the slow ones get fewer jobs so the run stays short.
PEERS: dict[str, tuple[str, int]] = {  # name -> (harness config, jobs)
    "dramatiq": ("default", 20_000),
    "saq": ("default", 10_000),
    "celery": ("default", 10_000),
    "rq": ("simple", 3_000),
    "arq": ("default", 2_000),
}
LATENCY_PEERS = ("saq", "celery", "dramatiq")


# -- a private server -------------------------------------------------------------------------
PERSISTENCE: dict[str, list[str]] = {  # --persistence mode -> redis-server arguments
    "off": ["--save", "", "--appendonly", "no"],
    "everysec": ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
}


class PrivateRedis:
    """redis-server on a free port in a temporary folder, stopped by its pid."""

    def __init__(self, directory: Path, persistence: str = "off") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed: install it, or pass --redis-url")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory)]
        argv += [*PERSISTENCE[persistence], "--daemonize", "no", "--logfile", ""]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if b"Ready to accept connections" in raw:
                break
        else:
            sys.exit("redis-server did not start")
        self.proc.stdout.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def used_memory_mb(url: str) -> float:
    client = redis.Redis.from_url(url)
    try:
        return float(client.info("memory")["used_memory"]) / 1e6
    finally:
        client.close()


# -- forebay phases ---------------------------------------------------------------------------
async def enqueue_one_caller(url: str, n: int) -> tuple[float, float]:
    async with Forebay(url) as app:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await app.enqueue(QUEUE, PAYLOAD)
        return n / (time.perf_counter() - t0), cpu_per_1k(cpu0, n)


async def enqueue_concurrent(url: str, n: int, callers: int = 100) -> tuple[float, float]:
    async with Forebay(url) as app:

        async def caller(k: int) -> None:
            for _ in range(k):
                await app.enqueue(QUEUE, PAYLOAD)

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
        done = n // callers * callers
        return done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)


async def enqueue_bulk(url: str, n: int, batch: int = 1000) -> tuple[float, float]:
    async with Forebay(url) as app:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            await app.enqueue_many(NewJob.create(QUEUE, PAYLOAD) for _ in range(min(batch, n - i)))
        return n / (time.perf_counter() - t0), cpu_per_1k(cpu0, n)


async def fill(url: str, n: int) -> None:
    async with Forebay(url) as app:
        for i in range(0, n, 2000):
            await app.enqueue_many(
                NewJob.create(QUEUE, {"i": i + k}) for k in range(min(2000, n - i))
            )


def child(mode: str, url: str, args: argparse.Namespace, marks: Path) -> dict[str, Any]:
    """Run this script as a worker process in ``mode``; return its JSON report."""
    argv = [sys.executable, __file__, f"--child-{mode}", url]
    argv += ["--concurrency", str(args.concurrency), "--n", str(args.n), "--marks", str(marks)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def marks_file() -> Path:
    path = Path(tempfile.gettempdir()) / f"forebay-bench-marks-{os.getpid()}.txt"
    path.unlink(missing_ok=True)
    return path


def process(url: str, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """Drain ``n`` queued no-op jobs with one worker process; check each ran exactly once.
    Return (jobs/s, CPU s per 1,000 jobs of the worker process)."""
    flush(url)
    asyncio.run(fill(url, n))
    marks = marks_file()
    report = child("worker", url, args, marks)
    lines = marks.read_bytes().count(b"\n") if marks.exists() else 0
    marks.unlink(missing_ok=True)
    if report["n"] != n or report["distinct"] != n or lines != n:
        raise RuntimeError(
            f"{report['n']} runs of {report['distinct']} jobs ({lines} lines written), "
            f"expected {n} of {n}"
        )
    return float(n / (report["last"] - report["first"])), report["cpu_s"] / n * 1000


async def child_worker(url: str, concurrency: int, marks_path: str) -> None:
    app = Forebay(url)
    stamps: list[float] = []
    ids: set[int] = set()
    cpu0 = [0.0]
    marks = Marks(marks_path)

    @app.handler(QUEUE, concurrency=concurrency)
    async def noop(job: Job) -> None:
        marks.mark()  # the peers' per-job work: one line appended to a file
        if not stamps:
            cpu0[0] = time.process_time()
        stamps.append(time.time())
        ids.add(job.id)

    await app.run_worker(burst=True, settings=WorkerSettings(handle_signals=False))
    cpu = time.process_time() - cpu0[0]
    await app.close()
    marks.close()
    report = {
        "n": len(stamps),
        "distinct": len(ids),
        "first": stamps[0],
        "last": stamps[-1],
        "cpu_s": cpu,
    }
    print(json.dumps(report))


async def child_latency(url: str, jobs: int, marks_path: str) -> None:
    """An idle worker: report enqueue->start latencies of ``jobs`` jobs (after a warm-up)."""
    app = Forebay(url)
    latencies: list[float] = []
    done = asyncio.Event()
    marks = Marks(marks_path)

    @app.handler(QUEUE, concurrency=8)
    async def noop(job: Job) -> None:
        started = time.time()
        ts = float(job.payload["ts"])  # type: ignore[index,arg-type,call-overload]
        marks.mark(ts)  # the peers' per-job work: one line appended to a file
        if ts > 0:
            latencies.append((started - ts) * 1000)
            if len(latencies) >= jobs:
                done.set()

    worker = app.worker(settings=WorkerSettings(handle_signals=False))
    running = asyncio.create_task(worker.run())
    print("ready", flush=True)
    await done.wait()
    worker.stop()
    await running
    await app.close()
    marks.close()
    print(json.dumps({"jobs": len(latencies), "latencies_ms": latencies}))


async def produce_at_rate(url: str, rate: float, jobs: int) -> None:
    async with Forebay(url) as app:
        for _ in range(5):  # warm-up, not measured
            await app.enqueue(QUEUE, {"ts": 0})
        await asyncio.sleep(0.5)
        t0 = time.perf_counter()
        for i in range(jobs):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await app.enqueue(QUEUE, {"ts": time.time()})


def latency(url: str, args: argparse.Namespace) -> tuple[float, float]:
    flush(url)
    jobs = int(args.rate * args.latency_seconds)
    marks = marks_file()
    argv = [sys.executable, __file__, "--child-latency", url, "--n", str(jobs)]
    argv += ["--marks", str(marks)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the latency worker did not start")
    asyncio.run(produce_at_rate(url, args.rate, jobs))
    report = json.loads(proc.communicate(timeout=120)[0].strip().splitlines()[-1])
    marks.unlink(missing_ok=True)
    values = sorted(report["latencies_ms"])
    return percentile(values, 50), percentile(values, 99)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def memory_run(url: str, jobs: int, concurrency: int) -> list[Row]:
    """Redis memory with a backlog, after processing, and after pruning finished jobs."""
    flush(url)
    before = used_memory_mb(url)
    await fill(url, jobs)
    backlog = used_memory_mb(url)
    app = Forebay(url)
    ran = 0

    @app.handler(QUEUE, concurrency=concurrency)
    async def noop(job: Job) -> None:
        nonlocal ran
        ran += 1

    worker = await app.run_worker(burst=True, settings=WorkerSettings(handle_signals=False))
    processed = used_memory_mb(url)
    pruner = app.worker(
        settings=WorkerSettings(completed_retention=timedelta(0), handle_signals=False)
    )
    pruned = await pruner.prune_once()
    after = used_memory_mb(url)
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    client = redis.Redis.from_url(url)
    streams = client.xlen(backend.keys.stream(QUEUE, 0))
    client.close()
    await app.close()
    note = f"{jobs:,} jobs, {ran:,} ran ({worker.processed:,} recorded), {pruned:,} pruned"
    return [
        Row("redis", "used_memory, empty", [before], "MB"),
        Row("redis", f"used_memory, {jobs:,} queued", [backlog], "MB"),
        Row("redis", "used_memory, all completed (kept for retention)", [processed], "MB"),
        Row(
            "redis", "used_memory, after pruning", [after], "MB", f"{note}; stream length {streams}"
        ),
    ]


# -- raw redis-py -----------------------------------------------------------------------------
Measured = tuple[float, float]  # (jobs/s, CPU s per 1,000 jobs)


def raw_rates(url: str, n: int) -> tuple[Measured, Measured, Measured]:
    """XADD one per round trip, XADD pipelined by 100, XREADGROUP + XACK of 100 per call."""
    r = redis.Redis.from_url(url)
    fields = {"p": json.dumps(PAYLOAD)}
    r.delete("raw")
    k = n // 4
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(k):
        r.xadd("raw", fields)
    single = k / (time.perf_counter() - t0), cpu_per_1k(cpu0, k)
    r.delete("raw")
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n // 100):
        pipe = r.pipeline(transaction=False)
        for _ in range(100):
            pipe.xadd("raw", fields)
        pipe.execute()
    piped = (n // 100 * 100) / (time.perf_counter() - t0), cpu_per_1k(cpu0, n // 100 * 100)
    r.xgroup_create("raw", "g", id="0")
    t0, cpu0 = time.perf_counter(), time.process_time()
    done = 0
    while True:
        got = r.xreadgroup("g", "c", {"raw": ">"}, count=100)
        if not got:
            break
        ids = [entry_id for entry_id, _ in got[0][1]]
        r.xack("raw", "g", *ids)
        done += len(ids)
    consumed = done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)
    r.delete("raw")
    r.close()
    return single, piped, consumed


# -- the run ----------------------------------------------------------------------------------
def forebay_rows(url: str, args: argparse.Namespace) -> list[Row]:
    rows = [
        Row("forebay", "enqueue 1 caller"),
        Row("forebay", "enqueue 100 callers"),
        Row("forebay", "enqueue bulk"),
        Row("forebay", "process no-op, 1 worker process", note=f"concurrency {args.concurrency}"),
    ]
    for _ in range(args.repeats):
        flush(url)
        rows[0].add(asyncio.run(enqueue_one_caller(url, args.n // 4)))
        flush(url)
        rows[1].add(asyncio.run(enqueue_concurrent(url, args.n)))
        flush(url)
        rows[2].add(asyncio.run(enqueue_bulk(url, args.n * 5)))
        rows[3].add(process(url, args.n * 2, args))
    rows[3].note += f", {args.n * 2:,} jobs, each ran exactly once"
    return rows


def raw_rows(url: str, args: argparse.Namespace) -> list[Row]:
    rows = [
        Row("raw redis-py", "XADD 1 per round trip"),
        Row("raw redis-py", "XADD pipelined by 100"),
        Row("raw redis-py", "XREADGROUP+XACK 100 per call"),
    ]
    for _ in range(args.repeats):
        flush(url)
        for row, measured in zip(rows, raw_rates(url, args.n * 5), strict=True):
            row.add(measured)
    return rows


def latency_rows(url: str, args: argparse.Namespace) -> list[Row]:
    p50 = Row("forebay", f"enqueue->start p50 at {args.rate:g}/s", unit="ms")
    p99 = Row("forebay", f"enqueue->start p99 at {args.rate:g}/s", unit="ms")
    for _ in range(args.repeats):
        a, b = latency(url, args)
        p50.values.append(a)
        p99.values.append(b)
    return [p50, p99]


def peer_rows(url: str, args: argparse.Namespace) -> tuple[list[Row], list[Row]]:
    directory = peers_dir(args.peers)
    if directory is None:
        given = args.peers or os.environ.get("FOREBAY_BENCH_PEERS")
        if given:
            print(f"peers skipped: {given} has no run_peers.py", flush=True)
        return [], []
    python = peer_python(args.peers_python)
    state = tempfile.mkdtemp(prefix="forebay-bench-peers-")
    os.environ.update(BENCH_REDIS_URL=url, BENCH_STATE=state)  # the harness reads these
    rows, lat = [], []
    for peer, (config, n) in PEERS.items():
        n = max(500, int(n * args.scale))
        results = run_peer(directory, python, peer, config=config, n=n, repeats=args.repeats)
        how = str(results[0]["enqueue_how"]) if results else "failed"
        complete = all(bool(r["complete"]) for r in results) if results else False
        rates = [float(r["enqueue_rate"]) for r in results]
        rows.append(Row(peer, "enqueue", rates, note=f"{how}; CPU not measured"))
        rows.append(
            Row(
                peer,
                "process no-op",
                [float(r["process_rate"]) for r in results],
                note=f"config {config}, {n:,} jobs, exactly N ran: {complete}; CPU not measured",
            )
        )
    if not args.no_latency:
        for peer in LATENCY_PEERS:
            extra = ("--seconds", str(args.latency_seconds), "--rate", str(args.rate))
            results = run_peer(
                directory, python, peer, repeats=args.repeats, latency=True, extra=extra
            )
            lat.append(Row(peer, "enqueue->start p50", [float(r["p50_ms"]) for r in results], "ms"))
            lat.append(Row(peer, "enqueue->start p99", [float(r["p99_ms"]) for r in results], "ms"))
    shutil.rmtree(state, ignore_errors=True)
    return rows, lat


def median(rows: list[Row], system: str, phase: str) -> float:
    for r in rows:
        # "forebay [off]" is forebay: the tag says which server.
        if r.system.split(" [")[0] == system and r.phase.startswith(phase) and r.values:
            return statistics.median(r.values)
    return float("nan")


def targets(ours: list[Row], raw: list[Row], peers: list[Row], latency: list[Row]) -> None:
    """The issue's targets, checked against this run's figures."""
    checks = []
    process = median(ours, "forebay", "process")
    dramatiq = median(peers, "dramatiq", "process")
    checks.append(("no-op processing >= 2x Dramatiq", process / dramatiq, 2.0))
    bulk = median(ours, "forebay", "enqueue bulk")
    checks.append(
        (
            "bulk enqueue >= 50% of raw pipelined XADD",
            bulk / median(raw, "raw redis-py", "XADD pipelined"),
            0.5,
        )
    )
    checks.append(("bulk enqueue >= 4x RQ bulk", bulk / median(peers, "rq", "enqueue"), 4.0))
    singles = [median(peers, p, "enqueue") for p in ("dramatiq", "saq", "celery", "arq")]
    fastest = max((s for s in singles if s == s), default=float("nan"))
    checks.append(
        (
            "1 caller enqueue >= fastest peer single enqueue",
            median(ours, "forebay", "enqueue 1 caller") / fastest,
            1.0,
        )
    )
    print("\n### targets\n")
    for name, ratio, need in checks:
        if ratio != ratio:  # NaN: the peer was not run
            print(f"* {name}: n/a (run with --peers)")
        else:
            print(f"* {name}: {ratio:.2f}x -> {'met' if ratio >= need else 'NOT met'}")
    if latency:
        p50 = median(latency, "forebay", "enqueue->start p50")
        p99 = median(latency, "forebay", "enqueue->start p99")
        ok = "met" if p50 <= 2 and p99 <= 5 else "NOT met"
        print(f"* idle enqueue->start p50 <= 2 ms, p99 <= 5 ms: {p50:.1f} / {p99:.1f} ms -> {ok}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--redis-url", help="a Redis to use (it is FLUSHED); default: a private server")
    ap.add_argument(
        "--n", type=int, default=20_000, help="jobs per phase (bulk: 5x, processing: 2x)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64, help="worker concurrency for processing")
    ap.add_argument("--rate", type=float, default=100.0, help="jobs/s for the latency phase")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--memory-jobs", type=int, default=200_000, help="0 skips the memory phase")
    ap.add_argument("--peers", help="peer harness directory (run_peers.py); or FOREBAY_BENCH_PEERS")
    ap.add_argument("--peers-python", help="Python with the peers installed")
    ap.add_argument("--scale", type=float, default=1.0, help="scale the peers' job counts")
    ap.add_argument("--quick", action="store_true", help="1 repeat, small sizes: a smoke run")
    ap.add_argument(
        "--persistence",
        choices=["off", "everysec", "both"],
        help="the private server's AOF: off, everysec (appendfsync everysec), or both, one run "
        "each (default: both; not with --redis-url)",
    )
    ap.add_argument("--child-worker", help=argparse.SUPPRESS)
    ap.add_argument("--child-latency", help=argparse.SUPPRESS)
    ap.add_argument("--marks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.redis_url and args.persistence:
        ap.error("--persistence starts private servers: not with --redis-url")
    # The benchmark's server may have no persistence on purpose (like the peers'): no warning.
    logging.getLogger("forebay.backends.redis").setLevel(logging.ERROR)
    if args.child_worker:
        asyncio.run(child_worker(args.child_worker, args.concurrency, args.marks))
        return
    if args.child_latency:
        asyncio.run(child_latency(args.child_latency, args.n, args.marks))
        return
    if args.quick:
        args.repeats, args.n, args.scale = 1, 4000, 0.25
        args.latency_seconds, args.memory_jobs = 3.0, min(args.memory_jobs, 20_000)
    servers: list[PrivateRedis] = []
    chosen: list[tuple[str, str]] = []  # (label, url)
    with tempfile.TemporaryDirectory(prefix="forebay-bench-redis-") as tmp:
        try:
            if args.redis_url:
                chosen = [("", args.redis_url)]
            else:
                both = args.persistence in (None, "both")
                for mode in ["off", "everysec"] if both else [args.persistence]:
                    servers.append(PrivateRedis(Path(tmp) / mode, mode))
                    chosen.append((mode, servers[-1].url))
            results = measure(chosen, args)
        finally:
            for server in servers:
                server.stop()
    report(results)


class Result:
    """One server's figures; ``label`` ("off", "everysec", "" for --redis-url) tags the rows."""

    def __init__(self, label: str, url: str) -> None:
        self.label = label
        self.url = url
        self.raw: list[Row] = []
        self.ours: list[Row] = []
        self.latency: list[Row] = []
        self.peers: list[Row] = []
        self.peer_latency: list[Row] = []
        self.memory: list[Row] = []


def describe(label: str, url: str) -> None:
    client = redis.Redis.from_url(url)
    info = client.info("server")
    try:
        config = client.config_get("appendonly") | client.config_get("appendfsync")
        config |= client.config_get("save")
        aof = f"appendonly {config['appendonly']}, appendfsync {config['appendfsync']}, "
        aof += f"save {config['save']!r}"
    except redis.ResponseError:
        aof = "persistence unknown (CONFIG GET refused)"
    client.close()
    print(
        f"redis {info['redis_version']} [{label or 'given'}: {aof}]; "
        f"redis-py {redis.__version__}; {os.cpu_count()} cores",
        flush=True,
    )


def merge(into: list[Row], new: list[Row]) -> list[Row]:
    """Append one repeat's rows to the rows so far (the first repeat's rows start them)."""
    if not into:
        return new
    for a, b in zip(into, new, strict=True):
        a.values += b.values
        a.cpu += b.cpu
        a.note = b.note
    return into


def measure(servers: list[tuple[str, str]], args: argparse.Namespace) -> list[Result]:
    """Every phase on every server, interleaved: each repeat runs each part (raw, forebay,
    latency) on one server after the other, in alternating order, so a drift of the machine
    over the run does not land on one server. The peers run on the first server only."""
    results = [Result(label, url) for label, url in servers]
    for res in results:
        describe(res.label, res.url)
    once = argparse.Namespace(**{**vars(args), "repeats": 1})
    for k in range(args.repeats):
        order = results if k % 2 == 0 else results[::-1]
        for res in order:
            res.raw = merge(res.raw, raw_rows(res.url, once))
        for res in order:
            res.ours = merge(res.ours, forebay_rows(res.url, once))
        if not args.no_latency:
            for res in order:
                res.latency = merge(res.latency, latency_rows(res.url, once))
    results[0].peers, results[0].peer_latency = peer_rows(results[0].url, args)
    for res in results:
        if args.memory_jobs:
            res.memory = asyncio.run(memory_run(res.url, args.memory_jobs, args.concurrency))
        if res.label:
            rows = res.raw + res.ours + res.latency + res.memory + res.peers + res.peer_latency
            for row in rows:
                row.system = f"{row.system} [{res.label}]"
    return results


def report(results: list[Result]) -> None:
    def all_of(field: str) -> list[Row]:
        return [row for res in results for row in getattr(res, field)]

    server = "the server in [brackets]"
    print_table(
        f"forebay and raw redis-py (CPU: the client process doing the work; Redis's not counted; "
        f"{server})",
        all_of("ours") + all_of("raw"),
    )
    if all_of("peers"):
        print_table(f"peers in the same run ({server})", all_of("peers"))
    if all_of("latency") or all_of("peer_latency"):
        print_table("idle enqueue->start latency", all_of("latency") + all_of("peer_latency"))
    if all_of("memory"):
        print_table("Redis memory over a run with pruning", all_of("memory"))
    lines: list[str] = []
    for res in results:
        lines += ratio_lines(res.ours, baseline(res.raw))
    print_ratios(lines)
    first = results[0]
    if len(results) > 1:
        print(f"\n(targets: on the [{first.label}] server, where the peers ran)")
    targets(first.ours, first.raw, first.peers, first.latency)
    if len(results) > 1:
        persistence_ratios(results)


def persistence_ratios(results: list[Result]) -> None:
    """everysec / off for the main forebay figures (and raw redis-py, for scale), last."""
    by = {res.label: res for res in results}
    off, every = by.get("off"), by.get("everysec")
    if off is None or every is None:
        return
    print("\n### everysec / off (medians of this run; < 1 for a rate, > 1 for latency: slower)\n")
    before = off.ours + off.latency + off.raw
    for a, b in zip(before, every.ours + every.latency + every.raw, strict=True):
        name = a.system.removesuffix(" [off]")
        if not a.values or not b.values or not a.median:
            print(f"* {name} {a.phase}: n/a")
            continue
        line = f"* {name} {a.phase}: {b.median / a.median:.2f}x ({b.median:,.1f} / {a.median:,.1f}"
        line += f" {a.unit})"
        if a.cpu and b.cpu:
            cpu = statistics.median(b.cpu) / statistics.median(a.cpu)
            line += f"; CPU s / 1,000 jobs {cpu:.2f}x"
        print(line)


def baseline(raw: list[Row]) -> dict[str, tuple[str, float]]:
    return {
        "enqueue 1 caller": (f"{raw[0].system} {raw[0].phase}", raw[0].median),
        "enqueue 100 callers": (f"{raw[0].system} {raw[0].phase}", raw[0].median),
        "enqueue bulk": (f"{raw[1].system} {raw[1].phase}", raw[1].median),
        "process no-op, 1 worker process": (f"{raw[2].system} {raw[2].phase}", raw[2].median),
    }


if __name__ == "__main__":
    main()
