"""The hot paths that stored queue settings touch, per backend: enqueue (the stored max_depth
is read in the enqueue's own transaction or script) and lease + complete (the lease reads the
stored ``paused``). Run it twice, back to back, to compare two checkouts of forebay:

    PYTHONPATH=src python benchmarks/controls.py --label new
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/controls.py --label old

Each line is one phase: jobs per second, median [min-max] of ``--repeats``. Phases:

* ``enqueue 1 caller``: one caller awaiting one ``app.enqueue`` at a time;
* ``enqueue 100 callers``: 100 concurrent callers (group commit);
* ``enqueue 1 caller, max_depth``: the same into a queue with a max_depth (declared by the
  app: stored in the store where forebay stores it, else checked from the app's memory);
* ``lease 100 + complete``: a backlog drained 100 jobs per lease, each batch completed.

SQLite at its default durability; PostgreSQL and Redis at ``FOREBAY_BENCH_PG`` /
``FOREBAY_BENCH_REDIS`` (default: the local test servers, database ``test`` and Redis db 15).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

# This folder holds redis.py and postgres.py: keep them from hiding the client packages.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from forebay import Forebay  # noqa: E402

PAYLOAD = {"doc": "x" * 40}
PG = os.environ.get("FOREBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("FOREBAY_BENCH_REDIS", "redis://127.0.0.1:6379/15")


def store_url(kind: str, tmp: Path) -> str:
    """A fresh store of ``kind`` (its own SQLite file, PostgreSQL schema or Redis prefix)."""
    tag = uuid.uuid4().hex[:10]
    if kind == "sqlite":
        return f"sqlite:///{tmp / tag}.db"
    if kind == "postgres":
        return f"{PG}?schema=bench_{tag}"
    return f"{REDIS}?prefix=bench-{tag}"


async def with_app(url: str, body: Callable[[Forebay], Awaitable[float]], depth: bool) -> float:
    app = Forebay(url)
    if depth:
        app.queue("bench", max_depth=10_000_000)
    async with app:
        try:
            return await body(app)
        finally:
            await app.backend.drop_everything()


async def enqueue_one(app: Forebay, n: int) -> float:
    await app.enqueue("bench", PAYLOAD)  # warm: open, prepare
    start = time.perf_counter()
    for _ in range(n):
        await app.enqueue("bench", PAYLOAD)
    return n / (time.perf_counter() - start)


async def enqueue_many_callers(app: Forebay, n: int, callers: int = 100) -> float:
    await app.enqueue("bench", PAYLOAD)

    async def caller(k: int) -> None:
        for _ in range(k):
            await app.enqueue("bench", PAYLOAD)

    start = time.perf_counter()
    await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
    return (n // callers * callers) / (time.perf_counter() - start)


async def lease_complete(app: Forebay, n: int) -> float:
    from forebay import NewJob

    backend = app.backend
    for i in range(0, n, 1000):
        await app.enqueue_many([NewJob.create("bench", PAYLOAD) for _ in range(min(1000, n - i))])
    done = 0
    start = time.perf_counter()
    while done < n:
        jobs = await backend.lease(queue="bench", limit=100, worker_id="bench", lease_s=60)
        if not jobs:
            break
        await backend.complete([j.lease for j in jobs])
        done += len(jobs)
    return done / (time.perf_counter() - start)


PHASES: dict[str, tuple[Callable[[Forebay, int], Awaitable[float]], bool, int]] = {
    "enqueue 1 caller": (enqueue_one, False, 1),
    "enqueue 100 callers": (enqueue_many_callers, False, 5),
    "enqueue 1 caller, max_depth": (enqueue_one, True, 1),
    "lease 100 + complete": (lease_complete, False, 5),
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--label", default="forebay")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1000, help="jobs per phase (x5 for batched ones)")
    ap.add_argument("--backends", default="sqlite,postgres,redis")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.backends.split(","):
            for phase, (measure, depth, scale) in PHASES.items():
                rates = []
                for _ in range(args.repeats):

                    async def body(app: Forebay, measure=measure, scale=scale) -> float:  # type: ignore[no-untyped-def]
                        return await measure(app, args.jobs * scale)

                    url = store_url(kind, Path(folder))
                    rates.append(asyncio.run(with_app(url, body, depth)))
                print(
                    f"| {args.label} | {kind} | {phase} | {statistics.median(rates):,.0f} "
                    f"[{min(rates):,.0f}-{max(rates):,.0f}] |",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
