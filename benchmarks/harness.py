"""Shared pieces of the benchmark scripts: repeats, medians, tables, and the peer harness.

Peers (RQ, arq, SAQ, Celery, Dramatiq, Procrastinate, PgQueuer) run through a separate harness
directory (``--peers DIR`` or ``FOREBAY_BENCH_PEERS``) with its own Python (``--peers-python`` or
``FOREBAY_BENCH_PEERS_PYTHON``), so their dependencies never enter forebay's environment. Its
``run_peers.py PEER`` prints one JSON line per repeat with ``enqueue_rate``, ``process_rate`` (and
``p50_ms``/``p99_ms`` with ``--latency``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One line of a result table: a measurement repeated a few times."""

    system: str
    phase: str
    values: list[float] = field(default_factory=list)
    unit: str = "jobs/s"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def cell(self) -> str:
        if not self.values:
            return "n/a"
        lo, hi = min(self.values), max(self.values)
        return f"{self.median:,.0f} [{lo:,.0f}-{hi:,.0f}]"


async def lease_ack_rate(url: str, jobs: int = 20_000, batch: int = 100) -> float:
    """Lease + complete in batches straight through the backend (no handler): jobs/s."""
    from forebay import Forebay

    async with Forebay(url) as app:
        backend = app.backend
        t0 = time.perf_counter()
        done = 0
        while done < jobs:
            leased = await backend.lease(queue="bench", limit=batch, worker_id="b", lease_s=60)
            if not leased:
                break
            await backend.complete([j.lease for j in leased])
            done += len(leased)
        return done / (time.perf_counter() - t0)


def repeat(times: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(times)]


def print_table(
    title: str, rows: Iterable[Row], *, baseline: dict[str, float] | None = None
) -> None:
    """Markdown table; ``baseline`` maps a phase to the figure the ratio column divides by."""
    rows = list(rows)
    print(f"\n### {title}\n")
    print("| system | phase | median [min-max] | unit | ratio | note |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = (baseline or {}).get(r.phase)
        ratio = f"{r.median / base:.2f}x" if base and r.values else ""
        print(f"| {r.system} | {r.phase} | {r.cell()} | {r.unit} | {ratio} | {r.note} |")


def peers_dir(given: str | None) -> Path | None:
    path = given or os.environ.get("FOREBAY_BENCH_PEERS")
    if not path:
        return None
    p = Path(path)
    return p if (p / "run_peers.py").exists() else None


def run_peer(
    directory: Path,
    python: str,
    peer: str,
    *,
    config: str = "default",
    n: int = 20_000,
    repeats: int = 3,
    latency: bool = False,
    extra: tuple[str, ...] = (),
    timeout_s: float = 1800,
) -> list[dict[str, object]]:
    """Run one peer through the harness; return its JSON rows (empty if it failed)."""
    argv = [python, "run_peers.py", peer, "--config", config, "--repeats", str(repeats)]
    argv += ["--latency"] if latency else ["--n", str(n)]
    argv += list(extra)
    # The harness empties (FLUSHDB) its Redis database before each run: never let it be the
    # database anything else uses (0), unless the caller points it somewhere on purpose.
    env = {**os.environ}
    env.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        done = subprocess.run(
            argv,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return []
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def peer_python(given: str | None) -> str:
    return given or os.environ.get("FOREBAY_BENCH_PEERS_PYTHON", "python3")


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
