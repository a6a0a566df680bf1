"""What run accounting costs processing: the same no-op jobs drained by one worker without a
run, in one run, and (``chains``) in one run as chains of dependencies, on every backend.

    python benchmarks/runs.py                                   # median of 3, 10,000 jobs
    python benchmarks/runs.py --backends sqlite,redis --jobs 20000 --chain 5

A job in a run costs its settle one more update (the run's counts, in the same transaction or
script) and, for the settle that finishes the run, its completion jobs; a job in a chain
(``after=[previous]``) also releases its waiting child when it completes. The target: a run
costs at most 15 % of the throughput of the same jobs without one.

Each repeat runs every mode in a fresh interpreter per backend, the modes taking turns in a
rotating order, so a quiet or a busy minute of a shared machine falls on all alike. Per mode:

* ``enqueue``: ``app.enqueue_many`` in batches of 500, building the ``NewJob`` values too
  (CPU µs per job of the producing process); a chain is enqueued link by link, each batch
  naming the previous link of each chain;
* ``process``: one in-process worker (concurrency 64) drains the jobs with a no-op handler
  (CPU µs per job of the worker process, and jobs/s from the first handler call to the end of
  the drain, so worker start-up is excluded).

The ratio columns are each mode over ``no run``, repeat by repeat (the two ran a few seconds
apart), median of the repeats: above 1 takes more CPU, below 1 processes fewer jobs per
second (the target: one run at 0.85 of no run's jobs/s or better). The store's own CPU (the
PostgreSQL or Redis server) is not counted in CPU µs, but it is in jobs/s.
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

from forebay import Forebay, Job, NewJob, RunState  # noqa: E402
from forebay.testing import drain, isolated_store, isolated_url  # noqa: E402

PG_URL = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FOREBAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
PAYLOAD = {"doc": "x" * 200, "n": 1}
BATCH = 500
MODES = {"plain": "no run", "run": "one run", "chains": "one run, chains"}


async def measure(backend: str, mode: str, jobs: int, chain: int, folder: str) -> dict[str, float]:
    """One repeat of one mode on one backend, in this interpreter."""
    base = {"sqlite": "sqlite:///unused.db", "postgres": PG_URL, "redis": REDIS_URL}[backend]
    url = isolated_url(base, folder)
    started: list[float] = []
    async with isolated_store(url):
        app = Forebay(url)

        @app.handler("bench", concurrency=64)
        async def noop(job: Job) -> None:
            if not started:
                started.append(time.perf_counter())

        async with app:
            run_id = None if mode == "plain" else (await app.start_run(name="bench")).id
            cpu0 = time.process_time()
            await enqueue(app, jobs, run_id, chain if mode == "chains" else 1)
            enqueue_cpu = time.process_time() - cpu0
            if run_id is not None:
                await app.seal_run(run_id)
            cpu0 = time.process_time()
            worker = await drain(app, ["bench"])
            process_cpu = time.process_time() - cpu0
            wall = time.perf_counter() - started[0]
            if worker.processed != jobs:
                raise SystemExit(f"{backend} {mode}: processed {worker.processed} of {jobs}")
            if run_id is not None:
                run = await app.get_run(run_id)
                if run.state is not RunState.COMPLETED or run.completed != jobs:
                    raise SystemExit(f"{backend} {mode}: the run did not complete: {run}")
    return {
        "enqueue_us": enqueue_cpu / jobs * 1e6,
        "process_us": process_cpu / jobs * 1e6,
        "process_rate": jobs / wall,
    }


async def enqueue(app: Forebay, jobs: int, run_id: str | None, chain: int) -> None:
    """``jobs`` jobs in ``jobs / chain`` chains (1: no dependencies), batches of ``BATCH``."""
    chains = jobs // chain
    previous: list[int] = []
    for link in range(chain):
        ids: list[int] = []
        for start in range(0, chains, BATCH):
            stop = min(start + BATCH, chains)
            batch = [
                NewJob.create(
                    "bench",
                    PAYLOAD | {"n": link * chains + i},
                    run=run_id,
                    after=(previous[i],) if previous else (),
                )
                for i in range(start, stop)
            ]
            ids += [job.id for job in await app.enqueue_many(batch)]
        previous = ids


def run_child(backend: str, mode: str, jobs: int, chain: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        argv = [sys.executable, __file__, "--child", f"{backend}:{mode}", "--folder", folder]
        done = subprocess.run(
            [*argv, "--jobs", str(jobs), "--chain", str(chain)], capture_output=True, text=True
        )
    if done.returncode != 0:
        raise SystemExit(f"{backend} {mode} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def print_table(
    results: dict[tuple[str, str], list[dict[str, float]]], backends: list[str]
) -> None:
    names = list(MODES.values())
    head = names + [f"{name} / no run" for name in names[1:]]
    print("| backend | phase | " + " | ".join(head) + " |")
    print("|---|---|" + "---|" * len(head))
    phases = (
        ("enqueue_us", "enqueue, CPU µs/job"),
        ("process_us", "lease+run+settle, CPU µs/job"),
        ("process_rate", "lease+run+settle, jobs/s"),
    )
    for backend in backends:
        for key, label in phases:
            cells = []
            for mode in MODES:
                values = [r[key] for r in results[(backend, mode)]]
                median = statistics.median(values)
                cells.append(f"{median:,.1f} [{min(values):,.1f}-{max(values):,.1f}]")
            plain = [r[key] for r in results[(backend, "plain")]]
            for mode in list(MODES)[1:]:
                paired = zip(results[(backend, mode)], plain, strict=True)
                cells.append(f"{statistics.median(r[key] / p for r, p in paired):.2f}")
            print(f"| {backend} | {label} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgres,redis")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--chain", type=int, default=10, help="links per chain in the chains mode")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        backend, mode = args.child.split(":")
        measured = asyncio.run(measure(backend, mode, args.jobs, args.chain, args.folder))
        print(json.dumps(measured))
        return
    if args.jobs % args.chain:
        raise SystemExit("--jobs must be a multiple of --chain")

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    modes = list(MODES)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for backend in backends:
            # Rotate which mode goes first, so none always meets a warmer machine.
            turn = modes[repeat % len(modes) :] + modes[: repeat % len(modes)]
            for mode in turn:
                results.setdefault((backend, mode), []).append(
                    run_child(backend, mode, args.jobs, args.chain)
                )

    print(f"\n{args.jobs:,} jobs per repeat (chains of {args.chain}), median of {args.repeats}\n")
    print_table(results, backends)


if __name__ == "__main__":
    main()
