"""forebay on its default SQLite backend, beside a raw sqlite3 loop and the fastest peers.

    python benchmarks/sqlite.py                      # forebay + raw SQLite, median of 3
    python benchmarks/sqlite.py --backlog --memory   # + leasing cost vs backlog, worker memory
    python benchmarks/sqlite.py --peers DIR --peers-python PY   # + peers in the same run

Every figure is jobs per second, median [min-max] of ``--repeats``, at the default durability
(WAL, ``synchronous=FULL``: survives power loss). Phases:

* ``enqueue 1 caller``: one caller awaiting one ``app.enqueue`` at a time;
* ``enqueue 100 callers``: 100 concurrent callers, each awaiting its own enqueue (group commit);
* ``enqueue bulk``: ``app.enqueue_many`` with 1,000 jobs per call;
* ``process no-op, 1 worker process``: a separate worker process drains a backlog of no-op jobs
  (rate = jobs / (last job start - first job start), as the peer harness measures); the handler
  does what the peers' no-op job does: one ``O_APPEND`` write of a line to a file per job;
* raw sqlite3: the same writes with the stdlib, no queue logic: single-row commits, 100-row
  transactions, claim (UPDATE ... RETURNING) + ack of 100 per transaction.

Beside each rate: CPU seconds per 1,000 jobs of the process doing the work (for processing: the
worker processes, from their first job to the end of their run; SQLite runs in-process, so this
is all the CPU there is). The peers' CPU is not measured. The ratios come last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

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
    rss_mb,
    run_peer,
)

from forebay import Forebay, Job, NewJob, WorkerSettings  # noqa: E402

PAYLOAD = {"doc": "x" * 40}


def fresh_url(tmp: Path, name: str) -> str:
    for suffix in ("", "-wal", "-shm"):
        (tmp / f"{name}.db{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{tmp / name}.db"


# -- forebay phases ----------------------------------------------------------------------------
async def enqueue_one_caller(url: str, n: int) -> tuple[float, float]:
    async with Forebay(url) as app:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await app.enqueue("bench", PAYLOAD)
        return n / (time.perf_counter() - t0), cpu_per_1k(cpu0, n)


async def enqueue_concurrent(url: str, n: int, callers: int = 100) -> tuple[float, float]:
    async with Forebay(url) as app:

        async def caller(k: int) -> None:
            for _ in range(k):
                await app.enqueue("bench", PAYLOAD)

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
        done = n // callers * callers
        return done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)


async def enqueue_bulk(url: str, n: int, batch: int = 1000) -> tuple[float, float]:
    async with Forebay(url) as app:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            await app.enqueue_many(
                NewJob.create("bench", PAYLOAD) for _ in range(min(batch, n - i))
            )
        return n / (time.perf_counter() - t0), cpu_per_1k(cpu0, n)


async def fill(url: str, n: int, queue: str = "bench") -> None:
    async with Forebay(url) as app:
        for i in range(0, n, 5000):
            await app.enqueue_many(NewJob.create(queue, PAYLOAD) for _ in range(min(5000, n - i)))


def process_in_child(
    url: str, n: int, concurrency: int, procs: int = 1
) -> tuple[float, float, float]:
    """Drain ``n`` queued no-op jobs with worker processes; return (jobs/s, CPU s per 1,000
    jobs of the worker processes, peak RSS MB). Each job appends a line to a file, as the
    peers' jobs do; the file must hold ``n`` lines after."""
    marks = Path(url.removeprefix("sqlite:///") + ".marks")
    marks.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--child-worker", url, "--concurrency", str(concurrency)]
    argv += ["--marks", str(marks)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    reports = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    done = sum(r["n"] for r in reports)
    lines = marks.read_bytes().count(b"\n")
    marks.unlink()
    if done != n or lines != n:
        raise RuntimeError(f"workers processed {done} jobs ({lines} lines written), expected {n}")
    first = min(r["first"] for r in reports if r["n"])
    last = max(r["last"] for r in reports if r["n"])
    cpu = sum(r["cpu_s"] for r in reports)
    return done / (last - first), cpu / done * 1000, max(r["rss_mb"] for r in reports)


async def child_worker(url: str, concurrency: int, marks_path: str | None) -> None:
    app = Forebay(url)
    stamps = [0.0, 0.0, 0.0, 0.0]  # jobs, first start, last start, CPU at the first start
    samples: list[float] = []
    marks = Marks(marks_path or os.devnull)

    @app.handler("bench", concurrency=concurrency)
    async def noop(job: Job) -> None:
        marks.mark()  # the peers' per-job work: one line appended to a file
        now = time.time()
        if not stamps[0]:
            stamps[1], stamps[3] = now, time.process_time()
        stamps[0] += 1
        stamps[2] = now
        if stamps[0] % 50_000 == 0:
            samples.append(rss_mb())

    await app.run_worker(burst=True, settings=WorkerSettings(burst=True, handle_signals=False))
    cpu = time.process_time() - stamps[3] if stamps[0] else 0.0
    await app.close()
    marks.close()
    samples.append(rss_mb())
    report = {
        "n": int(stamps[0]),
        "first": stamps[1],
        "last": stamps[2],
        "cpu_s": cpu,
        "rss_mb": max(samples),
        "rss_samples": samples,
    }
    print(json.dumps(report))


# -- raw sqlite3 ------------------------------------------------------------------------------
RAW_SCHEMA = """
CREATE TABLE q (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, state INTEGER NOT NULL DEFAULT 0);
CREATE INDEX q_pending ON q (id) WHERE state = 0;
"""


def raw_db(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(RAW_SCHEMA)
    return db


def raw_insert(path: Path, n: int, per_tx: int) -> tuple[float, float]:
    db = raw_db(path)
    body = json.dumps(PAYLOAD)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n // per_tx):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO q (payload) VALUES (?)", [(body,)] * per_tx)
        db.execute("COMMIT")
    done = n // per_tx * per_tx
    rate, cpu = done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)
    db.close()
    return rate, cpu


def raw_claim_ack(path: Path, n: int, per_tx: int = 100) -> tuple[float, float]:
    db = raw_db(path)
    db.execute("BEGIN")
    db.executemany("INSERT INTO q (payload) VALUES (?)", [(json.dumps(PAYLOAD),)] * n)
    db.execute("COMMIT")
    claim = (
        "UPDATE q SET state = 1 WHERE id IN "
        "(SELECT id FROM q WHERE state = 0 ORDER BY id LIMIT ?) RETURNING id, payload"
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    done = 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute(claim, (per_tx,)).fetchall()
        db.execute("COMMIT")
        if not rows:
            break
        db.execute("BEGIN IMMEDIATE")
        db.executemany("UPDATE q SET state = 2 WHERE id = ?", [(r[0],) for r in rows])
        db.execute("COMMIT")
        done += len(rows)
    rate, cpu = done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)
    db.close()
    return rate, cpu


# -- the run ----------------------------------------------------------------------------------
def forebay_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows = [
        Row("forebay", "enqueue 1 caller"),
        Row("forebay", "enqueue 100 callers"),
        Row("forebay", "enqueue bulk"),
        Row("forebay", "process no-op, 1 worker process", note=f"concurrency {args.concurrency}"),
        Row("forebay", "process no-op, 2 worker processes", note=f"concurrency {args.concurrency}"),
    ]
    for _ in range(args.repeats):
        rows[0].add(asyncio.run(enqueue_one_caller(fresh_url(tmp, "one"), args.n // 4)))
        rows[1].add(asyncio.run(enqueue_concurrent(fresh_url(tmp, "many"), args.n)))
        rows[2].add(asyncio.run(enqueue_bulk(fresh_url(tmp, "bulk"), args.n * 5)))
        for procs, row in ((1, rows[3]), (2, rows[4])):
            url = fresh_url(tmp, "proc")
            asyncio.run(fill(url, args.n * 2))
            rate, cpu, _ = process_in_child(url, args.n * 2, args.concurrency, procs)
            row.add((rate, cpu))
    return rows


def raw_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows = [
        Row("raw sqlite3", "insert 1 per commit"),
        Row("raw sqlite3", "insert 100 per commit"),
        Row("raw sqlite3", "claim+ack 100 per commit"),
    ]
    path = tmp / "raw.db"
    for _ in range(args.repeats):
        rows[0].add(raw_insert(path, args.n // 4, 1))
        rows[1].add(raw_insert(path, args.n * 5, 100))
        rows[2].add(raw_claim_ack(path, args.n * 2))
    return rows


def backlog_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows = []
    for backlog in (10_000, args.big_backlog):
        url = fresh_url(tmp, f"backlog{backlog}")
        asyncio.run(fill(url, backlog + 20_000))
        row = Row("forebay", f"lease+ack 100/batch, {backlog:,} queued")
        for _ in range(args.repeats):
            row.add(asyncio.run(lease_ack_rate(url, 20_000 // args.repeats)))
        rows.append(row)
    return rows


def memory_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    url = fresh_url(tmp, "memory")
    asyncio.run(fill(url, args.memory_jobs))
    argv = [sys.executable, __file__, "--child-worker", url, "--concurrency", str(args.concurrency)]
    argv += ["--marks", str(tmp / "memory.marks")]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    samples = report["rss_samples"]
    first, peak = samples[0], max(samples)
    return [
        Row("forebay", f"worker RSS after 50k of {args.memory_jobs:,} jobs", [first], "MB"),
        Row(
            "forebay",
            f"worker RSS peak over {args.memory_jobs:,} jobs",
            [peak],
            "MB",
            f"+{(peak / first - 1):.0%} over the run",
        ),
    ]


PEER_ENGINES = {"pgqueuer": "PostgreSQL", "dramatiq": "Redis"}
"""The peers run here, and the engine each runs on: none of them runs on SQLite."""


def peer_rows(args: argparse.Namespace) -> list[Row]:
    directory = peers_dir(args.peers)
    if directory is None:
        return []
    python = peer_python(args.peers_python)
    rows = []
    for peer in ("pgqueuer", "dramatiq"):
        results = run_peer(directory, python, peer, n=args.n, repeats=args.repeats)
        engine = PEER_ENGINES[peer]
        rows.append(
            Row(
                peer,
                "enqueue (peer's fastest API)",
                [float(r["enqueue_rate"]) for r in results],  # type: ignore[arg-type]
                note=f"on {engine}; CPU not measured",
            )
        )
        rows.append(
            Row(
                peer,
                "process no-op (peer default)",
                [float(r["process_rate"]) for r in results],  # type: ignore[arg-type]
                note=f"on {engine}; CPU not measured",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n", type=int, default=20_000, help="jobs per phase (bulk: 5x, processing: 2x)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64, help="worker concurrency for processing")
    ap.add_argument(
        "--backlog", action="store_true", help="leasing cost at 10k vs --big-backlog queued"
    )
    ap.add_argument("--big-backlog", type=int, default=1_000_000)
    ap.add_argument("--memory", action="store_true", help="worker memory over --memory-jobs jobs")
    ap.add_argument("--memory-jobs", type=int, default=1_000_000)
    ap.add_argument("--peers", help="peer harness directory (run_peers.py); or FOREBAY_BENCH_PEERS")
    ap.add_argument("--peers-python", help="Python with the peers installed")
    ap.add_argument("--child-worker", help=argparse.SUPPRESS)
    ap.add_argument("--marks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_worker:
        asyncio.run(child_worker(args.child_worker, args.concurrency, args.marks))
        return
    with tempfile.TemporaryDirectory(prefix="forebay-bench-") as tmpdir:
        tmp = Path(tmpdir)
        raw = raw_rows(args, tmp)
        ours = forebay_rows(args, tmp)
        single = f"raw sqlite3 {raw[0].phase}"
        baseline = {
            "enqueue 1 caller": (single, raw[0].median),
            "enqueue 100 callers": (single, raw[0].median),
            "enqueue bulk": (f"raw sqlite3 {raw[1].phase}", raw[1].median),
            "process no-op, 1 worker process": (f"raw sqlite3 {raw[2].phase}", raw[2].median),
            "process no-op, 2 worker processes": (f"raw sqlite3 {raw[2].phase}", raw[2].median),
        }
        ratios = ratio_lines(ours, baseline)
        ratios.append(
            f"forebay process no-op, 2 worker processes / 1: {ours[4].median / ours[3].median:.2f}x"
        )
        print(f"sqlite {sqlite3.sqlite_version}, WAL, synchronous=FULL; {os.cpu_count()} cores")
        print_table("forebay and raw sqlite3 (CPU: the process doing the work)", ours + raw)
        peers = peer_rows(args)
        if peers:
            print_table(
                "peers, measured after the above (on PostgreSQL and Redis, not SQLite)", peers
            )
            for r in peers:
                if r.phase.startswith("process") and r.values:
                    ratio = ours[3].median / r.median
                    ratios.append(
                        f"forebay on SQLite, process no-op 1 worker process / {r.system} on "
                        f"{PEER_ENGINES[r.system]}, process no-op: {ratio:.2f}x (different "
                        "engines and durability, measured minutes apart: not a like-for-like "
                        "comparison)"
                    )
        if args.backlog:
            leasing = backlog_rows(args, tmp)
            print_table("leasing cost vs backlog", leasing)
            ratios.append(
                f"{leasing[1].phase} / {leasing[0].phase}: "
                f"{leasing[1].median / leasing[0].median:.2f}x"
            )
        if args.memory:
            print_table("worker memory", memory_rows(args, tmp))
        print_ratios(ratios)


if __name__ == "__main__":
    main()
