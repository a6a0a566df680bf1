"""The hot paths per job — enqueue, and lease → no-op handler → settle — on every backend, in CPU
time of the process that runs them, optionally beside another checkout of forebay in the same run.

    python benchmarks/hotpath.py                               # this checkout, median of 3
    python benchmarks/hotpath.py --against ../forebay-v0.1     # interleaved with another tree
    python benchmarks/hotpath.py --backends sqlite,redis --jobs 20000

Each repeat runs in a fresh interpreter per tree and backend, the trees taking turns, so a
quiet or a busy minute of a shared machine falls on both alike. Phases, per job:

* ``enqueue``: ``app.enqueue_many`` in batches of 500, building the ``NewJob`` values too
  (CPU µs of the producing process);
* ``process``: one in-process worker (concurrency 64) drains the backlog of no-op jobs — lease,
  call, complete, heartbeats — and exits (CPU µs of the worker process, and jobs/s wall).

The store's own CPU (the PostgreSQL or Redis server) is not counted: compare it with the
engine-level scripts (``postgres.py``, ``redis.py``). ``--against DIR`` takes a checkout (its
``src/`` goes first on ``PYTHONPATH``); the ratio column is this tree over that one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This folder holds scripts named redis.py and postgres.py: keep them from shadowing the drivers.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
PG_URL = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FOREBAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
PAYLOAD = {"doc": "x" * 200, "n": 1}


async def measure(backend: str, jobs: int, folder: str) -> dict[str, float]:
    """One repeat on one backend, in this interpreter (whichever forebay it imports)."""
    from forebay import Forebay, Job, NewJob
    from forebay.testing import drain, isolated_store, isolated_url

    base = {"sqlite": "sqlite:///unused.db", "postgres": PG_URL, "redis": REDIS_URL}[backend]
    url = isolated_url(base, folder)
    async with isolated_store(url):
        app = Forebay(url)

        @app.handler("bench", concurrency=64)
        async def noop(job: Job) -> None:
            return None

        async with app:
            cpu0 = time.process_time()
            for start in range(0, jobs, 500):
                await app.enqueue_many(
                    NewJob.create("bench", PAYLOAD | {"n": i})
                    for i in range(start, min(start + 500, jobs))
                )
            enqueue_cpu = time.process_time() - cpu0
            cpu0, t0 = time.process_time(), time.perf_counter()
            worker = await drain(app, ["bench"])
            process_cpu = time.process_time() - cpu0
            wall = time.perf_counter() - t0
            if worker.processed != jobs:
                raise SystemExit(f"{backend}: processed {worker.processed} of {jobs}")
    return {
        "enqueue_us": enqueue_cpu / jobs * 1e6,
        "process_us": process_cpu / jobs * 1e6,
        "process_rate": jobs / wall,
    }


def run_child(tree: Path, backend: str, jobs: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, __file__, "--child", backend, "--jobs", str(jobs), "--folder", folder],
            env=env,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise SystemExit(f"{backend} on {tree} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgres,redis")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", type=Path, help="another forebay checkout to compare with")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.jobs, args.folder))))
        return

    this = HERE.parent
    trees = {"this": this} | ({"against": args.against.resolve()} if args.against else {})
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for backend in backends:
            # Alternate which tree goes first, so neither always meets a warmer machine.
            names = list(trees) if repeat % 2 == 0 else list(reversed(trees))
            for name in names:
                results.setdefault((name, backend), []).append(
                    run_child(trees[name], backend, args.jobs)
                )

    print(f"\n{args.jobs:,} jobs per repeat, median [min-max] of {args.repeats}\n")
    head = "| backend | phase | this |" + (" against | this / against |" if args.against else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    phases = (
        ("enqueue_us", "enqueue, CPU µs/job"),
        ("process_us", "lease+run+settle, CPU µs/job"),
        ("process_rate", "lease+run+settle, jobs/s"),
    )
    for backend in backends:
        for key, label in phases:
            cells, medians = [], []
            for name in trees:
                values = [r[key] for r in results[(name, backend)]]
                medians.append(statistics.median(values))
                cells.append(f"{medians[-1]:,.1f} [{min(values):,.1f}-{max(values):,.1f}]")
            ratio = f" {medians[0] / medians[1]:.2f} |" if args.against else ""
            print(f"| {backend} | {label} | " + " | ".join(cells) + " |" + ratio)


if __name__ == "__main__":
    main()
