"""The lease and settle hot paths, straight through the backend, on each backend.

    python -P benchmarks/settle.py                   # sqlite, postgres and redis, median of 3
    python -P benchmarks/settle.py --backends sqlite --n 5000

(``-P``: this folder holds a ``redis.py``, which must not hide the redis package.)

Per backend, a backlog of ``--n`` jobs is leased 100 at a time and each batch settled one way:

* ``complete``: completed with no result (plain leases, as most handlers return None);
* ``complete + result``: completed storing a small result (``{"rows": 100, "ok": true}``);
* ``retry``: put back to run in an hour, with an error and a 2 KB traceback (appended to the
  job's errors history);
* ``dead letter``: dead, with an error and a 2 KB traceback.

(``--no-traceback``: retries and dead letters carry none, to tell the cost of storing it.)

Each row says jobs per second for lease + settle together and for the settle calls alone,
median [min-max] of ``--repeats``. Stores are isolated (``forebay.testing.isolated_url``) and
dropped afterwards. To compare two versions, run this script under each (``PYTHONPATH`` naming
the other's ``src``) one after the other; a version without results or tracebacks runs the
rows it can.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import forebay.job as job_module
from forebay.backends.base import Backend
from forebay.job import Failure, Job, NewJob, Retry
from forebay.testing import isolated_store, isolated_url

URLS = {
    "sqlite": "sqlite:///./settle.db",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "redis": "redis://127.0.0.1:6379/0",
}
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + ('  File "/srv/app/handlers.py", line 120, in handle\n    rows = parse(job.payload)\n' * 20)
    + "KeyError: 'missing'"
)
HAS_RESULTS = hasattr(job_module, "Completion")

Settle = Callable[[Backend, Sequence[Job]], Any]


def _settlers(traceback: str | None) -> dict[str, Settle]:
    def complete(b: Backend, jobs: Sequence[Job]) -> Any:
        return b.complete([j.lease for j in jobs])

    def retry(b: Backend, jobs: Sequence[Job]) -> Any:
        later = time.time() + 3600
        extra = (traceback,) if HAS_RESULTS else ()
        return b.retry(
            [Retry(j.lease, later, "KeyError: 'missing'", "KeyError", *extra) for j in jobs]
        )

    def dead(b: Backend, jobs: Sequence[Job]) -> Any:
        extra = (traceback,) if HAS_RESULTS else ()
        return b.dead_letter(
            [Failure(j.lease, "KeyError: 'missing'", "KeyError", *extra) for j in jobs]
        )

    out: dict[str, Settle] = {"complete": complete}
    if HAS_RESULTS:
        completion = job_module.Completion  # type: ignore[attr-defined]

        def complete_result(b: Backend, jobs: Sequence[Job]) -> Any:
            return b.complete([completion(j.lease, '{"rows":100,"ok":true}') for j in jobs])

        out["complete + result"] = complete_result
    out["retry"] = retry
    out["dead letter"] = dead
    return out


async def _measure(
    url: str, folder: str, settle: Settle, n: int, batch: int
) -> tuple[float, float]:
    async with isolated_store(isolated_url(url, folder)) as backend:
        for start in range(0, n, 1000):
            count = min(1000, n - start)
            await backend.enqueue([NewJob.create("bench", {"i": i}) for i in range(count)])
        settling = 0.0
        done = 0
        t0 = time.perf_counter()
        while done < n:
            leased = await backend.lease(queue="bench", limit=batch, worker_id="b", lease_s=600)
            if not leased:
                break
            t1 = time.perf_counter()
            refused = await settle(backend, leased)
            settling += time.perf_counter() - t1
            assert not refused, refused
            done += len(leased)
        total = time.perf_counter() - t0
        assert done == n, (done, n)
        return n / total, n / settling


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(URLS), choices=list(URLS))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-traceback", action="store_true", help="retries and dead letters without one"
    )
    args = parser.parse_args(argv)
    print(f"\nforebay at {Path(job_module.__file__).parents[1]}, {args.n} jobs per run\n")
    print("| backend | settle | lease + settle, jobs/s | settle alone, jobs/s |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.backends:
            url = URLS[name]
            for kind, settle in _settlers(None if args.no_traceback else TRACEBACK).items():
                both, alone = [], []
                for _ in range(args.repeats):
                    a, b = await _measure(url, folder, settle, args.n, args.batch)
                    both.append(a)
                    alone.append(b)
                print(f"| {name} | {kind} | {_cell(both)} | {_cell(alone)} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
