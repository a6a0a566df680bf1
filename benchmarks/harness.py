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
    cpu: list[float] = field(default_factory=list)
    """CPU seconds per 1,000 jobs, one per repeat (empty: not measured)."""

    def add(self, measured: tuple[float, float]) -> None:
        """Append one repeat's (value, CPU s per 1,000 jobs)."""
        self.values.append(measured[0])
        self.cpu.append(measured[1])

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def cell(self) -> str:
        if not self.values:
            return "n/a"
        lo, hi = min(self.values), max(self.values)
        return f"{self.median:,.0f} [{lo:,.0f}-{hi:,.0f}]"

    def cpu_cell(self) -> str:
        if not self.cpu:
            return ""
        return f"{statistics.median(self.cpu):.3f} [{min(self.cpu):.3f}-{max(self.cpu):.3f}]"


def cpu_per_1k(cpu0: float, jobs: int) -> float:
    """CPU seconds (all threads of this process) per 1,000 jobs since ``time.process_time()``
    read ``cpu0``."""
    return (time.process_time() - cpu0) / jobs * 1000 if jobs else float("nan")


class Marks:
    """The per-job work of the peers' no-op job (the peer harness's ``common.mark``): one
    ``O_APPEND`` write of ``"<start time> <enqueue time>\n"`` to a file, so forebay's no-op
    handlers do what the peers' do."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def mark(self, ts: float = 0.0) -> None:
        os.write(self._fd, b"%.6f %.6f\n" % (time.time(), ts))

    def close(self) -> None:
        os.close(self._fd)


async def lease_ack_rate(url: str, jobs: int = 20_000, batch: int = 100) -> tuple[float, float]:
    """Lease + complete in batches straight through the backend (no handler): (jobs/s, CPU s
    of this process per 1,000 jobs)."""
    from forebay import Forebay

    async with Forebay(url) as app:
        backend = app.backend
        t0, cpu0 = time.perf_counter(), time.process_time()
        done = 0
        while done < jobs:
            leased = await backend.lease(queue="bench", limit=batch, worker_id="b", lease_s=60)
            if not leased:
                break
            await backend.complete([j.lease for j in leased])
            done += len(leased)
        return done / (time.perf_counter() - t0), cpu_per_1k(cpu0, done)


def repeat(times: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(times)]


def print_table(
    title: str, rows: Iterable[Row], *, baseline: dict[str, float] | None = None
) -> None:
    """Markdown table; ``baseline`` maps a phase to the figure a ratio column divides by (none
    without it: see :func:`ratio_lines`). A CPU column shows when a row measured CPU."""
    rows = list(rows)
    cpu = any(r.cpu for r in rows)
    heads = ["system", "phase", "median [min-max]", "unit"]
    heads += ["CPU s / 1,000 jobs"] if cpu else []
    heads += ["ratio"] if baseline else []
    print(f"\n### {title}\n")
    print("| " + " | ".join([*heads, "note"]) + " |")
    print("|" + "---|" * (len(heads) + 1))
    for r in rows:
        cells = [r.system, r.phase, r.cell(), r.unit]
        cells += [r.cpu_cell()] if cpu else []
        if baseline:
            base = baseline.get(r.phase)
            cells.append(f"{r.median / base:.2f}x" if base and r.values else "")
        print("| " + " | ".join([*cells, r.note]) + " |")


def ratio_lines(rows: Iterable[Row], baseline: dict[str, tuple[str, float]]) -> list[str]:
    """``"system phase / what: ratio"`` for each row whose phase ``baseline`` maps to
    (what, its figure)."""
    lines = []
    for r in rows:
        what, base = baseline.get(r.phase, ("", float("nan")))
        if r.values and base == base and base:
            lines.append(f"{r.system} {r.phase} / {what}: {r.median / base:.2f}x")
    return lines


def print_ratios(lines: Iterable[str]) -> None:
    """The ratios, last: each divides two figures of this run printed above."""
    lines = list(lines)
    if not lines:
        return
    print("\n### ratios (medians of this run)\n")
    for line in lines:
        print(f"* {line}")


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
