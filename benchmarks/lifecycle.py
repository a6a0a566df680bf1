"""A job's whole path through each backend's own methods, in one process: enqueue, lease,
complete, prune. For comparing two versions of forebay back to back on the same machine.

    python benchmarks/lifecycle.py                     # every backend, median of 5
    PYTHONPATH=OTHER/src python benchmarks/lifecycle.py --backends sqlite

Phases (jobs per second, median [min-max] of ``--repeats``; each repeat on a fresh store):

* ``enqueue 1 caller``: one ``app.enqueue`` awaited at a time;
* ``enqueue bulk``: ``app.enqueue_many`` of 1,000 jobs per call;
* ``lease+complete``: ``backend.lease`` of 100, then ``backend.complete`` of those, until empty
  (the worker's hot path without a handler);
* ``... with own limits``: the same with every job given ``max_attempts`` and ``timeout_s``
  (only where this version of forebay has them);
* ``prune``: ``prune_once`` deleting ``--n`` completed jobs spread over 10 queues; ``prune, 5
  queues with own retention``: the same with half the queues keeping their own (shorter)
  retention and one queue keeping its jobs (only where this version has per-queue retention).

PostgreSQL runs in its own schema of ``BENCH_PG_DSN``'s database (default the test database),
Redis under its own key prefix of ``BENCH_REDIS_URL`` (default db 0); both are dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import tempfile
import time
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This folder goes last: benchmarks/redis.py must not hide the redis package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.append(str(HERE))

from harness import Row, print_table  # noqa: E402

from forebay import Forebay, Job, NewJob, QueueConfig, WorkerSettings  # noqa: E402
from forebay.job import Lease  # noqa: E402
from forebay.testing import isolated_url  # noqa: E402
from forebay.worker.maintenance import prune_once  # noqa: E402

PG = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
HAS_LIMITS = "max_attempts" in inspect.signature(NewJob.create).parameters
HAS_RETENTION = "completed_retention" in {f.name for f in fields(QueueConfig)}


def _url(kind: str, tmp: Path) -> str:
    base = {"sqlite": "sqlite:///x.db", "postgres": PG, "redis": REDIS}[kind]
    return isolated_url(base, tmp)


async def _with_app(url: str, run: Any) -> float:
    app = Forebay(url)
    await app.open()
    try:
        return float(await run(app))
    finally:
        await app.backend.drop_everything()
        await app.close()


async def enqueue_one(app: Forebay, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await app.enqueue("q", {"i": i})
    return n / (time.perf_counter() - start)


def _jobs(n: int, limits: bool, queue: str = "q") -> list[NewJob]:
    extra: dict[str, Any] = {"max_attempts": 7, "timeout_s": 30.0} if limits else {}
    return [NewJob.create(queue, {"i": i}, **extra) for i in range(n)]


async def enqueue_bulk(app: Forebay, n: int, limits: bool = False) -> float:
    batches = [_jobs(1000, limits) for _ in range(n // 1000)]
    start = time.perf_counter()
    for batch in batches:
        await app.enqueue_many(batch)
    return n / (time.perf_counter() - start)


async def lease_complete(app: Forebay, n: int, limits: bool = False) -> float:
    for _ in range(n // 1000):
        await app.enqueue_many(_jobs(1000, limits))
    backend = app.backend
    done = 0
    start = time.perf_counter()
    while True:
        jobs: list[Job] = await backend.lease(queue="q", limit=100, worker_id="w", lease_s=30)
        if not jobs:
            break
        await backend.complete([Lease(j.id, j.lease_token or "") for j in jobs])
        done += len(jobs)
    assert done == n, (done, n)
    return n / (time.perf_counter() - start)


async def prune(app: Forebay, n: int, own: bool) -> float:
    queues = [f"q{i}" for i in range(10)]
    per = n // len(queues)
    backend = app.backend
    for name in queues:
        for _ in range(per // 1000 or 1):
            await app.enqueue_many(_jobs(min(per, 1000), False, name))
        while jobs := await backend.lease(queue=name, limit=1000, worker_id="w", lease_s=30):
            await backend.complete([Lease(j.id, j.lease_token or "") for j in jobs])
    configs: list[QueueConfig] = []
    if own:
        configs = [QueueConfig(name, completed_retention=timedelta(0)) for name in queues[:5]]
        configs.append(QueueConfig("kept", completed_retention=timedelta(days=1)))
    settings = WorkerSettings(completed_retention=timedelta(0))
    start = time.perf_counter()
    if configs:
        deleted = await prune_once(backend, settings, configs)
    else:
        deleted = await prune_once(backend, settings)
    elapsed = time.perf_counter() - start
    assert deleted == per * len(queues), (deleted, per * len(queues))
    return deleted / elapsed


def measure(kind: str, args: argparse.Namespace, tmp: Path) -> list[Row]:
    n = args.n
    phases: list[tuple[str, Any]] = [
        ("enqueue 1 caller", lambda app: enqueue_one(app, n // 4)),
        ("enqueue bulk", lambda app: enqueue_bulk(app, n * 2)),
        ("lease+complete", lambda app: lease_complete(app, n)),
    ]
    if HAS_LIMITS:
        phases += [
            ("enqueue bulk, with own limits", lambda app: enqueue_bulk(app, n * 2, True)),
            ("lease+complete, with own limits", lambda app: lease_complete(app, n, True)),
        ]
    phases.append(("prune", lambda app: prune(app, n, False)))
    if HAS_RETENTION:
        phases.append(("prune, 5 queues with own retention", lambda app: prune(app, n, True)))
    rows = []
    for phase, run in phases:
        row = Row(kind, phase)
        for _ in range(args.repeats):
            row.values.append(asyncio.run(_with_app(_url(kind, tmp), run)))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=10_000, help="jobs per phase (bulk: 2x)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgres,redis")
    args = ap.parse_args()
    import forebay

    with tempfile.TemporaryDirectory(prefix="forebay-bench-") as tmpdir:
        rows = [
            row
            for kind in args.backends.split(",")
            for row in measure(kind.strip(), args, Path(tmpdir))
        ]
    print_table(f"forebay from {Path(forebay.__file__).parent}", rows)


if __name__ == "__main__":
    main()
