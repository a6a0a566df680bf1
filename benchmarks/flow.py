"""Flow control (docs/flow-control.md) under load, per backend: fair leasing between a huge
tenant and a small one, and what a per-key rate limit over many keys costs the lease.

    python benchmarks/flow.py                                   # every backend, the issue's sizes
    python benchmarks/flow.py --backend sqlite --jobs 10000 --lease-jobs 5000   # a quick look
    python benchmarks/flow.py --only fairness --backend postgres

**Fairness.** Tenant A enqueues ``--jobs`` jobs (100,000), then one worker (concurrency 64,
no-op handler) starts draining; once it has started ``--head`` of A's jobs, tenant B enqueues
``--small`` jobs (100) in one batch. Reported, from B's enqueue: B's enqueue→start p50 and p99
(seconds), when B's last job started and when A's last job started. ``fifo`` is the queue
without limits (B waits behind A's backlog); ``fair`` declares ``fair_key="tenant"`` (the
tenants take turns). Both modes run in the same script run, in turns.

**Per-key rate cost.** ``--lease-jobs`` jobs (20,000), spread over ``--keys`` rate keys (1,000),
are leased and completed in batches of 100 straight through the backend (no handler), on a
queue with a non-binding ``rate_limit_per_key`` (``1000000/s``: every key's bucket is read and
spent, none ever runs dry) and on the same queue without limits. Reported: lease+complete
jobs/s, CPU seconds per 1,000 jobs of this process (the PostgreSQL or Redis server's own CPU is
not counted; it is in jobs/s), and each mode's ratio to the queue without limits, repeat by
repeat (target: the rate-limited queue at 0.80 of its jobs/s or better). A third mode leases
the same jobs without rate keys, to show what carrying keys costs on a queue without limits.

Each measurement runs in a fresh interpreter, the modes taking turns in a rotating order per
repeat, so a quiet or a busy minute of a shared machine falls on both alike.
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

from forebay import Forebay, Job, NewJob, WorkerSettings  # noqa: E402
from forebay.flow import NO_LIMITS, FlowLimits, Rate  # noqa: E402
from forebay.testing import isolated_store, isolated_url  # noqa: E402

PG_URL = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FOREBAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("sqlite", "postgres", "redis")
PAYLOAD = {"doc": "x" * 200, "n": 1}
BATCH = 1000
FAIRNESS = {"fifo": "no fair_key", "fair": 'fair_key="tenant"'}
RATE_COST = {
    "bare": "no limits, jobs without keys",
    "plain": "no limits",
    "per_key": "rate_limit_per_key=1000000/s",
}
NON_BINDING = Rate.parse("1000000/s")


def url_for(backend: str, folder: str) -> str:
    base = {"sqlite": "sqlite:///unused.db", "postgres": PG_URL, "redis": REDIS_URL}[backend]
    return isolated_url(base, folder)


# -- fairness ------------------------------------------------------------------------------


async def fairness(
    backend: str, mode: str, jobs: int, small: int, head: int, folder: str
) -> dict[str, float]:
    """One drain of A's backlog with B's jobs enqueued once it is under way."""
    url = url_for(backend, folder)
    started: dict[int, float] = {}
    under_way = asyncio.Event()
    async with isolated_store(url):
        app = Forebay(url)
        options = {"fair_key": "tenant"} if mode == "fair" else {}

        @app.handler("bench", concurrency=64, **options)
        async def noop(job: Job) -> None:
            started[job.id] = time.time()
            if len(started) >= head:
                under_way.set()

        async with app:
            for start in range(0, jobs, BATCH):
                await app.enqueue_many(
                    NewJob.create("bench", PAYLOAD | {"n": i}, tenant="a")
                    for i in range(start, min(start + BATCH, jobs))
                )
            settings = WorkerSettings(handle_signals=False)
            worker = asyncio.create_task(app.run_worker(["bench"], burst=True, settings=settings))
            await under_way.wait()
            t_enqueue = time.time()
            b_jobs = await app.enqueue_many(
                NewJob.create("bench", PAYLOAD | {"n": i}, tenant="b") for i in range(small)
            )
            done = await worker
            if done.processed != jobs + small:
                raise SystemExit(f"{backend} {mode}: processed {done.processed} of {jobs + small}")
    b_ids = {job.id for job in b_jobs}
    waits = sorted(started[i] - t_enqueue for i in b_ids)
    a_last = max(t for i, t in started.items() if i not in b_ids)
    return {
        "b_p50_s": percentile(waits, 0.50),
        "b_p99_s": percentile(waits, 0.99),
        "b_last_s": waits[-1],
        "a_last_s": a_last - t_enqueue,
        "rate": (jobs + small) / (max(started.values()) - min(started.values())),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


# -- per-key rate cost ------------------------------------------------------------------------


async def rate_cost(backend: str, mode: str, jobs: int, keys: int, folder: str) -> dict[str, float]:
    """Lease + complete ``jobs`` jobs spread over ``keys`` rate keys, batches of 100."""
    url = url_for(backend, folder)
    async with isolated_store(url) as store:
        limits = FlowLimits(rate_per_key=NON_BINDING) if mode == "per_key" else NO_LIMITS
        await store.set_queue("bench", limits=limits)
        for start in range(0, jobs, BATCH):
            await store.enqueue(
                [
                    NewJob.create(
                        "bench",
                        PAYLOAD | {"n": i},
                        rate_key=None if mode == "bare" else f"key-{i % keys}",
                    )
                    for i in range(start, min(start + BATCH, jobs))
                ]
            )
        done = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while done < jobs:
            leased = await store.lease(queue="bench", limit=100, worker_id="bench", lease_s=60)
            if not leased:
                raise SystemExit(f"{backend} {mode}: the lease came back empty at {done} of {jobs}")
            await store.complete([job.lease for job in leased])
            done += len(leased)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"rate": done / wall, "cpu_s_per_1k": cpu / done * 1000}


# -- the parent: children in turns, tables --------------------------------------------------


def run_child(test: str, backend: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        argv = [sys.executable, __file__, "--child", f"{test}:{backend}:{mode}", "--folder", folder]
        argv += ["--jobs", str(args.jobs), "--small", str(args.small), "--head", str(args.head)]
        argv += ["--lease-jobs", str(args.lease_jobs), "--keys", str(args.keys)]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{test} {backend} {mode} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def in_turns(
    test: str, modes: list[str], backends: list[str], repeats: int, args: argparse.Namespace
) -> dict[tuple[str, str], list[dict[str, float]]]:
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for repeat in range(repeats):
        for backend in backends:
            # Rotate which mode goes first, so neither always meets a warmer machine.
            turn = modes[repeat % len(modes) :] + modes[: repeat % len(modes)]
            for mode in turn:
                print(f"  {test} {backend} {mode} (repeat {repeat + 1})", file=sys.stderr)
                results.setdefault((backend, mode), []).append(run_child(test, backend, mode, args))
    return results


def cell(values: list[float], fmt: str) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, fmt)
    return f"{format(median, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def print_fairness(
    results: dict[tuple[str, str], list[dict[str, float]]], backends: list[str]
) -> None:
    print(
        "| backend | mode | B enqueue→start p50 s | B p99 s | B's last start s "
        "| A's last start s | drain jobs/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for backend in backends:
        for mode, label in FAIRNESS.items():
            rows = results[(backend, mode)]
            cells = [
                cell([r[k] for r in rows], ",.2f")
                for k in ("b_p50_s", "b_p99_s", "b_last_s", "a_last_s")
            ]
            cells.append(cell([r["rate"] for r in rows], ",.0f"))
            print(f"| {backend} | {label} | " + " | ".join(cells) + " |")


def print_rate_cost(
    results: dict[tuple[str, str], list[dict[str, float]]], backends: list[str]
) -> None:
    print("| backend | mode | lease+complete jobs/s | CPU s / 1k jobs | jobs/s vs no limits |")
    print("|---|---|---|---|---|")
    for backend in backends:
        plain = results[(backend, "plain")]
        for mode, label in RATE_COST.items():
            rows = results[(backend, mode)]
            ratios = [r["rate"] / p["rate"] for r, p in zip(rows, plain, strict=True)]
            print(
                f"| {backend} | {label} | {cell([r['rate'] for r in rows], ',.0f')} "
                f"| {cell([r['cpu_s_per_1k'] for r in rows], '.3f')} "
                f"| {statistics.median(ratios):.2f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--backend", default="all", help="sqlite, postgres, redis, all, or a list: sqlite,redis"
    )
    ap.add_argument("--only", choices=("fairness", "rate"), help="run one of the two measurements")
    ap.add_argument("--jobs", type=int, default=100_000, help="fairness: tenant A's jobs")
    ap.add_argument("--small", type=int, default=100, help="fairness: tenant B's jobs")
    ap.add_argument(
        "--head", type=int, default=1000, help="fairness: A's jobs started before B enqueues"
    )
    ap.add_argument(
        "--lease-jobs", type=int, default=20_000, help="rate cost: jobs leased per mode"
    )
    ap.add_argument(
        "--keys", type=int, default=1000, help="rate cost: rate keys the jobs spread over"
    )
    ap.add_argument(
        "--repeats", type=int, default=1, help="fairness repeats (rate cost: 3 at least)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        test, backend, mode = args.child.split(":")
        if test == "fairness":
            measured = fairness(backend, mode, args.jobs, args.small, args.head, args.folder)
        else:
            measured = rate_cost(backend, mode, args.lease_jobs, args.keys, args.folder)
        print(json.dumps(asyncio.run(measured)))
        return
    if not 0 < args.head < args.jobs:
        raise SystemExit("--head must be above 0 and below --jobs")

    names = BACKENDS if args.backend == "all" else [b.strip() for b in args.backend.split(",")]
    backends = [b for b in names if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(
            f"unknown backend {', '.join(sorted(unknown))}: give {', '.join(BACKENDS)} or all"
        )
    if args.only != "rate":
        results = in_turns("fairness", list(FAIRNESS), backends, args.repeats, args)
        print(
            f"\n### Fairness: tenant A {args.jobs:,} jobs, then tenant B {args.small:,} once "
            f"{args.head:,} of A's started; seconds from B's enqueue, median of {args.repeats}\n"
        )
        print_fairness(results, backends)
    if args.only != "fairness":
        repeats = max(3, args.repeats)
        results = in_turns("rate", list(RATE_COST), backends, repeats, args)
        print(
            f"\n### Per-key rate cost: {args.lease_jobs:,} jobs over {args.keys:,} rate keys, "
            f"lease+complete in batches of 100, median [min-max] of {repeats}\n"
        )
        print_rate_cost(results, backends)


if __name__ == "__main__":
    main()
