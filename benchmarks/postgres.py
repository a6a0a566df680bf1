"""forebay on PostgreSQL, beside a raw asyncpg loop running the same statements and the peers.

    python benchmarks/postgres.py                        # forebay + raw asyncpg, median of 3
    python benchmarks/postgres.py --peers DIR --peers-python PY   # + the peers, same run
    python benchmarks/postgres.py --quick                # a smoke run: small N, 1 repeat

The database is ``--dsn`` (default ``postgresql://postgres@127.0.0.1:5432/bench``; forebay uses
its own schema there, dropped afterwards). Every figure is median [min-max] of ``--repeats``,
with PostgreSQL's default durability (``synchronous_commit=on``). Peers: PgQueuer (1 and 2
processes), Procrastinate and SAQ's PostgreSQL queue, through the peer harness, on the same
database. Phases:

* ``enqueue 1 caller``: one caller awaiting one ``app.enqueue`` at a time;
* ``enqueue 100 callers``: 100 concurrent callers, each awaiting its own single enqueue
  (group commit: many callers' jobs per INSERT and commit);
* ``enqueue bulk``: ``app.enqueue_many`` with 1,000 jobs per call;
* ``process no-op, 1 / 2 worker processes``: separate worker processes drain a backlog of no-op
  jobs (rate = jobs / (last job start - first job start), as the peer harness measures); the
  handler does what the peers' no-op job does: one ``O_APPEND`` write of a line to a file;
* ``enqueue->start latency``: a worker idles, jobs are enqueued one at a time at ``--rate``
  per second; p50 and p99 of (handler start - time before the enqueue call), in ms;
* ``lease+ack, N queued``: lease 100 + complete 100 through the backend, with 10,000 and with
  ``--big-backlog`` jobs queued (leasing cost should not grow with the backlog);
* ``--churn N``: N jobs through a worker that prunes completed jobs at once; the size of the
  jobs table with its indexes is sampled (it should stay bounded, not grow with N);
* raw asyncpg: forebay's own SQL statements (from its ``queries.sql``) in a plain loop on one
  connection, without forebay's Python around them: the ceiling for each phase.

Beside each rate: CPU seconds per 1,000 jobs of the client process doing the work (for
processing: the worker processes, from their first job to the end of their run). PostgreSQL's
own CPU is not counted, nor the peers'. The ratios come last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import asyncpg  # noqa: E402
from harness import (  # noqa: E402
    Marks,
    Row,
    cpu_per_1k,
    lease_ack_rate,
    peer_python,
    peers_dir,
    print_ratios,
    print_table,
    ratio_lines,
    run_peer,
)

from forebay import Forebay, Job, NewJob, WorkerSettings  # noqa: E402
from forebay.backends.postgres import PostgresBackend  # noqa: E402
from forebay.backends.postgres.backend import _insert_args  # noqa: E402
from forebay.backends.postgres.schema import queries  # noqa: E402

PAYLOAD = {"doc": "x" * 40}
AUTOVACUUM_ON = "SELECT current_setting('autovacuum')::boolean"
DEFAULT_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/bench")


def schema_url(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


def new_schema() -> str:
    return f"forebay_bench_{secrets.token_hex(3)}"


async def drop(url: str) -> None:
    backend = PostgresBackend.from_url(url)
    await backend.open()
    await backend.drop_everything()
    await backend.close()


def fresh(dsn: str) -> str:
    return schema_url(dsn, new_schema())


# -- forebay phases ----------------------------------------------------------------------------
async def enqueue_one_caller(url: str, n: int) -> tuple[float, float]:
    async with Forebay(url) as app:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await app.enqueue("bench", PAYLOAD)
        rate, cpu = n / (time.perf_counter() - t0), cpu_per_1k(cpu0, n)
    await drop(url)
    return rate, cpu


async def enqueue_concurrent(url: str, n: int, callers: int = 100) -> tuple[float, float]:
    async with Forebay(url) as app:

        async def caller(k: int) -> None:
            for _ in range(k):
                await app.enqueue("bench", PAYLOAD)

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
        done = n // callers * callers
        rate, cpu = done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)
    await drop(url)
    return rate, cpu


async def enqueue_bulk(url: str, n: int, batch: int = 1000) -> tuple[float, float]:
    async with Forebay(url) as app:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            await app.enqueue_many(
                NewJob.create("bench", PAYLOAD) for _ in range(min(batch, n - i))
            )
        rate, cpu = n / (time.perf_counter() - t0), cpu_per_1k(cpu0, n)
    await drop(url)
    return rate, cpu


async def fill(url: str, n: int, queue: str = "bench") -> None:
    async with Forebay(url) as app:
        for i in range(0, n, 10_000):
            await app.enqueue_many(NewJob.create(queue, PAYLOAD) for _ in range(min(10_000, n - i)))
        conn = await asyncpg.connect(url.split("?")[0])
        schema = url.rsplit("schema=", 1)[1]
        await conn.execute(f'VACUUM ANALYZE "{schema}".jobs')
        await conn.close()


def process_in_children(url: str, n: int, concurrency: int, procs: int) -> tuple[float, float]:
    """Drain ``n`` queued no-op jobs with ``procs`` worker processes; return (jobs/s, CPU s per
    1,000 jobs of the worker processes). Each job appends a line to a file, as the peers' jobs
    do; the file must hold ``n`` lines after."""
    marks = Path(tempfile.gettempdir()) / f"forebay-bench-marks-{os.getpid()}.txt"
    marks.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--child-worker", url, "--concurrency", str(concurrency)]
    argv += ["--marks", str(marks)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    reports = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    done = sum(r["n"] for r in reports)
    lines = marks.read_bytes().count(b"\n") if marks.exists() else 0
    marks.unlink(missing_ok=True)
    if done != n or lines != n:
        raise RuntimeError(f"workers processed {done} jobs ({lines} lines written), expected {n}")
    first = min(r["first"] for r in reports if r["n"])
    last = max(r["last"] for r in reports if r["n"])
    cpu = sum(r["cpu_s"] for r in reports)
    return done / (last - first), cpu / done * 1000


async def child_worker(url: str, concurrency: int, marks_path: str | None) -> None:
    app = Forebay(url)
    stamps: list[float] = []
    cpu0 = [0.0]
    marks = Marks(marks_path or os.devnull)

    @app.handler("bench", concurrency=concurrency)
    async def noop(job: Job) -> None:
        marks.mark()  # the peers' per-job work: one line appended to a file
        if not stamps:
            cpu0[0] = time.process_time()
        stamps.append(time.time())

    await app.run_worker(burst=True, settings=WorkerSettings(burst=True, handle_signals=False))
    cpu = time.process_time() - cpu0[0] if stamps else 0.0
    await app.close()
    marks.close()
    report = {
        "n": len(stamps),
        "first": stamps[0] if stamps else 0,
        "last": max(stamps, default=0),
        "cpu_s": cpu,
    }
    print(json.dumps(report))


async def latency_child(url: str, marks: str) -> None:
    """A worker that idles and records (start time, enqueue time) of each job, until SIGTERM."""
    app = Forebay(url)
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.handler("latency", concurrency=8)
    async def record(job: Job) -> None:
        os.write(fd, b"%.6f %.6f\n" % (time.time(), float(job.payload["ts"])))  # type: ignore[index,arg-type]

    await app.run_worker()
    await app.close()


def latency(dsn: str, rate: float, seconds: float) -> tuple[float, float]:
    url = fresh(dsn)
    marks = Path(tempfile.gettempdir()) / f"forebay-bench-latency-{os.getpid()}.txt"
    marks.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, __file__, "--latency-child", url, str(marks)])
    try:
        asyncio.run(_latency_producer(url, marks, rate, seconds))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    lines = [tuple(map(float, ln.split())) for ln in marks.read_text().splitlines()]
    marks.unlink()
    asyncio.run(drop(url))
    lat = sorted((start - ts) * 1000 for start, ts in lines if ts > 0)
    return pct(lat, 50), pct(lat, 99)


async def _latency_producer(url: str, marks: Path, rate: float, seconds: float) -> None:
    async with Forebay(url) as app:
        for _ in range(5):  # warm-up: wait until the worker really consumes
            await app.enqueue("latency", {"ts": 0})
        await _until_lines(marks, 5)
        k = int(rate * seconds)
        t0 = time.perf_counter()
        for j in range(k):
            delay = t0 + j / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await app.enqueue("latency", {"ts": time.time()})
        await _until_lines(marks, 5 + k)


async def _until_lines(path: Path, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or path.read_bytes().count(b"\n") < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the latency worker did not record {n} jobs")
        await asyncio.sleep(0.02)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] if values else 0.0


# -- raw asyncpg: forebay's statements, no forebay around them --------------------------------
async def raw_session(dsn: str) -> tuple[Any, dict[str, str], str]:
    url = fresh(dsn)
    backend = PostgresBackend.from_url(url)
    await backend.open()  # creates the schema
    await backend.close()
    schema = url.rsplit("schema=", 1)[1]
    conn = await asyncpg.connect(dsn, server_settings={"jit": "off"})
    return conn, queries(schema), url


def _args(rows: int) -> tuple[Any, ...]:
    """The enqueue statement's parameters for ``rows`` plain jobs of one queue, built as the
    backend builds them (so the raw phase follows the statement's parameters as they change);
    $10, whether a queue's max_depth is looked up, is false: no queue here has one."""
    args = _insert_args([NewJob.create("bench", PAYLOAD)] * rows)
    return (*args[:9], False, *args[9:])


async def raw_insert(dsn: str, n: int, per_statement: int) -> tuple[float, float]:
    conn, q, url = await raw_session(dsn)
    args = _args(per_statement)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n // per_statement):
        await conn.fetch(q["enqueue_plain"], *args)
    done = n // per_statement * per_statement
    rate, cpu = done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)
    await conn.close()
    await drop(url)
    return rate, cpu


async def raw_claim_ack(dsn: str, n: int, per_batch: int = 100) -> tuple[float, float]:
    conn, q, url = await raw_session(dsn)
    for i in range(0, n, 10_000):
        await conn.fetch(q["enqueue_plain"], *_args(min(10_000, n - i)))
    t0, cpu0 = time.perf_counter(), time.process_time()
    done = 0
    while True:
        # $6, the time to lease at: NULL (the server's now(), as the backend leases)
        rows = await conn.fetch(q["lease"], "bench", per_batch, "token", 60.0, "raw", None)
        if not rows:
            break
        k = len(rows)
        ids, tokens = [r[0] for r in rows], ["token"] * k
        # outcomes, run_at, messages, kinds: NULL; all "complete"; no tracebacks, no results;
        # $10: not jobs others wait on (the backend's plain settle)
        settle = (ids, tokens, None, None, None, None, "complete", None, None, False)
        await conn.fetch(q["settle"], *settle)
        done += k
    rate, cpu = done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)
    await conn.close()
    await drop(url)
    return rate, cpu


# -- the run ----------------------------------------------------------------------------------
def forebay_rows(args: argparse.Namespace) -> list[Row]:
    note = f"concurrency {args.concurrency}"
    rows = [
        Row("forebay", "enqueue 1 caller"),
        Row("forebay", "enqueue 100 callers"),
        Row("forebay", "enqueue bulk", note="1,000 per call"),
        Row("forebay", "process no-op, 1 worker process", note=note),
        Row("forebay", "process no-op, 2 worker processes", note=note),
    ]
    for _ in range(args.repeats):
        rows[0].add(asyncio.run(enqueue_one_caller(fresh(args.dsn), args.n // 4)))
        rows[1].add(asyncio.run(enqueue_concurrent(fresh(args.dsn), args.n)))
        rows[2].add(asyncio.run(enqueue_bulk(fresh(args.dsn), args.n * 5)))
        for procs, row in ((1, rows[3]), (2, rows[4])):
            url = fresh(args.dsn)
            asyncio.run(fill(url, args.n * 2))
            row.add(process_in_children(url, args.n * 2, args.concurrency, procs))
            asyncio.run(drop(url))
    return rows


def raw_rows(args: argparse.Namespace) -> list[Row]:
    rows = [
        Row("raw asyncpg", "insert 1 per commit", note="forebay's enqueue statement"),
        Row("raw asyncpg", "insert 100 per commit"),
        Row("raw asyncpg", "insert 1,000 per commit"),
        Row("raw asyncpg", "claim+ack 100 per batch", note="forebay's lease + settle"),
    ]
    for _ in range(args.repeats):
        rows[0].add(asyncio.run(raw_insert(args.dsn, args.n // 4, 1)))
        rows[1].add(asyncio.run(raw_insert(args.dsn, args.n * 5, 100)))
        rows[2].add(asyncio.run(raw_insert(args.dsn, args.n * 5, 1000)))
        rows[3].add(asyncio.run(raw_claim_ack(args.dsn, args.n * 2)))
    return rows


def latency_rows(args: argparse.Namespace) -> list[Row]:
    p50 = Row("forebay", f"enqueue->start p50 @{args.rate:g}/s", unit="ms")
    p99 = Row("forebay", f"enqueue->start p99 @{args.rate:g}/s", unit="ms")
    for _ in range(args.repeats):
        a, b = latency(args.dsn, args.rate, args.latency_seconds)
        p50.values.append(a)
        p99.values.append(b)
    return [p50, p99]


def backlog_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    per_repeat = args.n
    for backlog in (10_000, args.big_backlog):
        url = fresh(args.dsn)
        asyncio.run(fill(url, backlog + per_repeat * args.repeats))
        row = Row("forebay", f"lease+ack 100/batch, {backlog:,} queued")
        for _ in range(args.repeats):
            row.add(asyncio.run(lease_ack_rate(url, per_repeat)))
        asyncio.run(drop(url))
        rows.append(row)
    return rows


def churn_rows(args: argparse.Namespace) -> list[Row]:
    """Push ``--churn`` jobs through a worker that prunes as it goes; sample the table's size."""
    url = fresh(args.dsn)
    asyncio.run(fill(url, 0))
    argv = [sys.executable, __file__, "--churn-child", url, "--concurrency", str(args.concurrency)]
    child = subprocess.Popen(argv)
    try:
        sizes = asyncio.run(_churn_producer(url, args.churn))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(120)
    asyncio.run(drop(url))
    first = next((mb for done, mb in sizes if done >= args.churn // 10), sizes[0][1])
    peak, last = max(mb for _, mb in sizes), sizes[-1][1]
    note = f"peak {peak:.0f} MB, at the end {last:.0f} MB"
    if not asyncio.run(_autovacuum_on(args.dsn)):
        note += "; autovacuum is off here: the benchmark ran VACUUM every 10 s"
    return [
        Row("forebay", f"table+indexes after 10% of {args.churn:,} jobs", [first], "MB"),
        Row("forebay", f"table+indexes peak over {args.churn:,} jobs", [peak], "MB", note),
    ]


async def _churn_producer(url: str, total: int) -> list[tuple[int, float]]:
    """Enqueue in bulk while the backlog stays under 50,000; return (jobs done, MB) samples."""
    schema = url.rsplit("schema=", 1)[1]
    conn = await asyncpg.connect(url.split("?")[0])
    size_sql = f"SELECT pg_total_relation_size('\"{schema}\".jobs')"
    samples: list[tuple[int, float]] = []
    # Where the server runs no autovacuum, do its work every 10 s (else nothing reuses space).
    vacuum_every_s = None if await conn.fetchval(AUTOVACUUM_ON) else 10.0
    last_vacuum = time.monotonic()
    async with Forebay(url) as app:
        enqueued = 0
        while True:
            if vacuum_every_s and time.monotonic() - last_vacuum > vacuum_every_s:
                await conn.execute(f'VACUUM "{schema}".jobs')
                last_vacuum = time.monotonic()
            depth = sum(c.depth for c in await app.counts())
            samples.append((enqueued - depth, await conn.fetchval(size_sql) / 2**20))
            if depth == 0 and enqueued >= total:
                break
            if enqueued < total and depth < 50_000:
                k = min(10_000, total - enqueued)
                await app.enqueue_many(NewJob.create("bench", PAYLOAD) for _ in range(k))
                enqueued += k
            else:
                await asyncio.sleep(0.5)
    await conn.close()
    return samples


async def _autovacuum_on(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(AUTOVACUUM_ON))
    finally:
        await conn.close()


async def churn_child(url: str, concurrency: int) -> None:
    app = Forebay(url)

    @app.handler("bench", concurrency=concurrency)
    async def noop(job: Job) -> None:
        return None

    settings = WorkerSettings(completed_retention=timedelta(0), prune_every_s=1.0)
    await app.run_worker(settings=settings)
    await app.close()


PEERS = (
    # peer, config, share of --n (the slow ones get fewer jobs to keep the run short)
    ("pgqueuer", "default", 1.0),
    ("pgqueuer", "x2", 1.0),
    ("procrastinate", "default", 0.1),
    ("saq_pg", "default", 0.2),
)


def peer_rows(args: argparse.Namespace) -> tuple[list[Row], list[Row]]:
    directory = peers_dir(args.peers)
    if directory is None:
        return [], []
    python = peer_python(args.peers_python)
    env_note = "BENCH_PG_DSN" if "BENCH_PG_DSN" in os.environ else "bench database"
    rows, latencies = [], []
    for peer, config, share in PEERS:
        n = max(500, int(args.n * share))
        results = run_peer(directory, python, peer, config=config, n=n, repeats=args.repeats)
        how = str(results[0]["enqueue_how"]) if results else "failed"
        name = f"{peer} ({config})"
        rates = [float(r["enqueue_rate"]) for r in results]  # type: ignore[arg-type]
        rows.append(Row(name, "enqueue", rates, note=f"{how}; CPU not measured"))
        rates = [float(r["process_rate"]) for r in results]  # type: ignore[arg-type]
        rows.append(Row(name, "process no-op", rates, note=f"N={n}; CPU not measured"))
    extra = ("--rate", str(args.rate), "--seconds", str(args.latency_seconds))
    results = run_peer(
        directory, python, "pgqueuer", latency=True, repeats=args.repeats, extra=extra
    )
    for key in ("p50_ms", "p99_ms"):
        label = f"enqueue->start {key[:3]} @{args.rate:g}/s"
        latencies.append(
            Row("pgqueuer", label, [float(r[key]) for r in results], unit="ms", note=env_note)
        )  # type: ignore[arg-type]
    return rows, latencies


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL database to benchmark in")
    ap.add_argument(
        "--n", type=int, default=20_000, help="jobs per phase (bulk: 5x, processing: 2x)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--concurrency", type=int, default=128, help="worker concurrency for processing"
    )
    ap.add_argument("--rate", type=float, default=100.0, help="jobs/s for the latency phase")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--big-backlog", type=int, default=1_000_000)
    ap.add_argument("--no-backlog", action="store_true", help="skip the 10k vs big backlog phase")
    ap.add_argument(
        "--churn",
        type=int,
        default=0,
        help="also run this many jobs with pruning, sizing the table",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: --n 2000, 1 repeat, 100k backlog"
    )
    ap.add_argument("--peers", help="peer harness directory (run_peers.py); or FOREBAY_BENCH_PEERS")
    ap.add_argument("--peers-python", help="Python with the peers installed")
    ap.add_argument("--child-worker", help=argparse.SUPPRESS)
    ap.add_argument("--marks", help=argparse.SUPPRESS)
    ap.add_argument("--latency-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--churn-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    # The header says whether autovacuum runs; do not repeat it at every open.
    logging.getLogger("forebay.postgres").addFilter(
        lambda record: "autovacuum is off" not in record.getMessage()
    )
    if args.child_worker:
        asyncio.run(child_worker(args.child_worker, args.concurrency, args.marks))
        return
    if args.latency_child:
        asyncio.run(latency_child(*args.latency_child))
        return
    if args.churn_child:
        asyncio.run(churn_child(args.churn_child, args.concurrency))
        return
    if args.quick:
        args.n, args.repeats, args.big_backlog, args.latency_seconds = 2000, 1, 100_000, 3.0
    raw = raw_rows(args)
    ours = forebay_rows(args)
    baseline = {
        "enqueue 1 caller": (f"{raw[0].system} {raw[0].phase}", raw[0].median),
        "enqueue 100 callers": (f"{raw[0].system} {raw[0].phase}", raw[0].median),
        "enqueue bulk": (f"{raw[2].system} {raw[2].phase}", raw[2].median),
        "process no-op, 1 worker process": (f"{raw[3].system} {raw[3].phase}", raw[3].median),
        "process no-op, 2 worker processes": (f"{raw[3].system} {raw[3].phase}", raw[3].median),
    }
    ratios = ratio_lines(ours, baseline)
    ratios.append(
        f"forebay process no-op, 2 worker processes / 1: {ours[4].median / ours[3].median:.2f}x"
    )
    autovacuum = "on" if asyncio.run(_autovacuum_on(args.dsn)) else "OFF"
    print(
        f"PostgreSQL at {args.dsn.split('@')[-1]}, synchronous_commit=on, autovacuum "
        f"{autovacuum}; {os.cpu_count()} cores"
    )
    print_table(
        "forebay and raw asyncpg running forebay's statements (CPU: the client process doing "
        "the work; PostgreSQL's not counted)",
        ours + raw,
    )
    ours_latency = latency_rows(args)
    peers, peer_latency = peer_rows(args)
    if peers:
        by = {r.system + "|" + r.phase: r.median for r in peers}
        print_table("peers in the same run", peers)
        pgq_proc = by.get("pgqueuer (default)|process no-op", float("nan"))
        pgq_bulk = by.get("pgqueuer (default)|enqueue", float("nan"))
        ratios.append(
            f"forebay process no-op, 1 worker process / PgQueuer (default) process no-op: "
            f"{ours[3].median / pgq_proc:.2f}x"
        )
        ratios.append(f"forebay enqueue bulk / PgQueuer enqueue: {ours[2].median / pgq_bulk:.2f}x")
    print_table("idle enqueue->start latency", ours_latency + peer_latency)
    if not args.no_backlog:
        leasing = backlog_rows(args)
        print_table("leasing cost vs backlog", leasing)
        ratios.append(
            f"{leasing[1].phase} / {leasing[0].phase}: {leasing[1].median / leasing[0].median:.2f}x"
        )
    if args.churn:
        print_table("table size over a long run, pruning completed jobs at once", churn_rows(args))
    print_ratios(ratios)


if __name__ == "__main__":
    main()
