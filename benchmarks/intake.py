"""HTTP intake benchmark: what durability costs, as a ratio measured in one run.

For each backend (SQLite always; PostgreSQL and Redis when their module is present and their
server answers), this starts the server ``forebay serve`` runs in a subprocess (intake only,
default durable settings), with one route added, and drives it over real HTTP with ``wrk``
(Debian: ``apt-get install wrk``), a separate process, measuring requests/s and ack latency
p50/p99 for:

* ``bare``: ``POST /v1/queues/_bare/bench/jobs`` — the same server, settings, middleware and
  request handling (token check, body limit, JSON parsing, validation) but no enqueue; this
  script adds it (:func:`mount_bare`), forebay itself has no such route;
* ``enqueue``: ``POST /v1/queues/bench/jobs`` — answered after the job is committed.

The headline is enqueue/bare. Then the enqueue endpoint is driven at 80 % of its measured
maximum rate (paced per connection) to report the ack latency a sender sees under steady load,
and the server's resident memory is shown before and after (``--soak-s 600`` for the 10-minute
memory check).

    python benchmarks/intake.py                      # every available backend, 3 x 10 s per phase
    python benchmarks/intake.py --backend sqlite --duration-s 5 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
from starlette.requests import Request  # at the top: FastAPI reads the route's annotations
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from fastapi import FastAPI

APP = textwrap.dedent(
    """
    from forebay import Forebay

    app = Forebay()
    app.queue("bench")  # producer-only here: jobs stay queued, nothing competes with intake
    """
)

BARE_PATH = "/v1/queues/_bare/{queue}/jobs"
"""The enqueue route minus the enqueue. Under ``/v1/queues/.../jobs``, so the intake metrics
count and time it as they do the enqueue route."""

PG_URL = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FOREBAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class Measure:
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds in, MB)

    def add(self, other: Measure) -> None:
        self.rps += other.rps
        self.p50_ms += other.p50_ms
        self.p99_ms += other.p99_ms
        self.errors += other.errors

    @property
    def rate(self) -> float:
        return statistics.median(self.rps) if self.rps else float("nan")

    def row(self, backend: str, endpoint: str, note: str = "") -> str:
        if not self.rps:
            return f"| {backend} | {endpoint} | n/a | | | {note} |"
        p50 = statistics.median(self.p50_ms)
        p99 = statistics.median(self.p99_ms)
        spread = f" [{min(self.rps):,.0f}-{max(self.rps):,.0f}]" if len(self.rps) > 1 else ""
        errors = f"{self.errors} non-2xx/errors; " if self.errors else ""
        return (
            f"| {backend} | {endpoint} | {self.rate:,.0f}{spread} | {p50:.2f} | {p99:.2f} "
            f"| {errors}{note} |"
        )


# -- wrk ----------------------------------------------------------------------------------------
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise RuntimeError(f"unexpected duration in wrk's output: {text!r}")
    return float(found.group(1)) * _UNITS_MS[found.group(2)]


def parse_wrk(output: str) -> Measure:
    measure = Measure()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    measure.rps.append(float(rps.group(1)))
    measure.p50_ms.append(_ms(p50.group(1)))
    measure.p99_ms.append(_ms(p99.group(1)))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    measure.errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        measure.errors += sum(int(n) for n in socket_errors.groups())
    return measure


def wrk_script(folder: Path, body: str, delay_ms: float | None) -> Path:
    script = folder / f"post-{secrets.token_hex(3)}.lua"
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if delay_ms is not None:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    script.write_text("\n".join(lines) + "\n")
    return script


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    watch: psutil.Process | None = None,
) -> Measure:
    """One wrk run; with ``watch``, that process's resident memory is sampled every 5 s."""
    command = [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "--latency",
        "--script",
        str(script),
        url,
    ]
    if watch is None:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return parse_wrk(done.stdout)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        while True:
            samples.append((time.monotonic() - started, watch.memory_info().rss / 2**20))
            try:
                output, _ = proc.communicate(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command, output)
    measure = parse_wrk(output)
    measure.rss_mb = samples
    return measure


# -- the server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mount_bare(api: FastAPI) -> None:
    """Add the bare route to an app of :func:`forebay.http.create_app`, just after the enqueue
    route (so finding it costs the router what finding that one does)."""
    from forebay.http.intake import JOBS_PATH, read_jobs

    service = api.state.service

    async def bare(queue: str, request: Request) -> Response:
        """The enqueue endpoint minus the enqueue (what durability costs is the difference)."""
        jobs, many = await read_jobs(service, queue, request)
        body = {"id": 0, "queue": queue, "created": True, "jobs": len(jobs), "many": many}
        return JSONResponse(body, status_code=200)

    api.add_api_route(BARE_PATH, bare, methods=["POST"], include_in_schema=False)
    routes = api.router.routes
    route = routes.pop()
    after = next(i for i, r in enumerate(routes) if getattr(r, "path", None) == JOBS_PATH)
    routes.insert(after + 1, route)


def serve_bare(app_ref: str, port: int) -> None:
    """Run what ``forebay serve APP --port PORT --no-workers --log-level warning`` runs, with
    the bare route added (the server subprocess of :func:`serving`)."""
    from forebay.cli.serve import run_server, service_api
    from forebay.cli.session import make_app
    from forebay.http import ServiceSettings
    from forebay.logs import LogLevel, configure_logging

    settings = ServiceSettings.from_env(port=port, workers=False, log_level="warning")
    app = make_app(settings.url, app_ref)
    configure_logging(LogLevel.WARNING, log_format=settings.log_format)
    api = service_api(app, settings, app_ref)
    mount_bare(api)
    sys.exit(0 if run_server(api, settings) else 1)


@contextmanager
def serving(url: str, folder: Path) -> Iterator[tuple[str, psutil.Process]]:
    (folder / "benchapp.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "FOREBAY_URL": url}
    env.pop("FOREBAY_API_TOKENS", None)
    log = (folder / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", "benchapp:app", str(port)],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"forebay serve exited:\n{Path(log.name).read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("forebay serve did not become ready within 60 s")
            time.sleep(0.1)
        yield base, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def backend_urls(chosen: list[str], folder: Path) -> dict[str, str]:
    tag = secrets.token_hex(4)
    candidates = {
        "sqlite": f"sqlite:///{folder / 'bench.db'}",
        "postgres": f"{PG_URL}?schema=forebay_bench_{tag}",
        "redis": f"{REDIS_URL}?prefix=forebay-bench-{tag}",
    }
    servers = {"postgres": PG_URL, "redis": REDIS_URL}
    urls = {}
    for name in chosen:
        if importlib.util.find_spec(f"forebay.backends.{name}") is None:
            print(f"- {name}: skipped (backend not in this checkout)")
            continue
        if name in servers and not _reachable(servers[name]):
            print(f"- {name}: skipped (server not reachable at {servers[name]})")
            continue
        urls[name] = candidates[name]
    return urls


def _reachable(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


async def _drop(url: str) -> None:
    from forebay import Forebay

    app = Forebay(url)
    await app.open()
    await app.backend.drop_everything()
    await app.close()


# -- one backend --------------------------------------------------------------------------------
@dataclass
class Result:
    backend: str
    bare: Measure
    enqueue: Measure
    paced: Measure
    paced_target: float
    rss_before_mb: float
    rss_after_mb: float
    soak: Measure | None = None


def bench_backend(name: str, url: str, folder: Path, args: argparse.Namespace) -> Result:
    payload = {"doc": "x" * max(0, args.body_bytes - 40), "source": "bench"}
    body = json.dumps({"payload": payload})
    closed = wrk_script(folder, body, None)
    bare, enqueue = Measure(), Measure()
    with serving(url, folder) as (base, server):
        jobs_url = f"{base}/v1/queues/bench/jobs"
        bare_url = base + BARE_PATH.format(queue="bench")
        run_wrk(bare_url, closed, connections=args.connections, duration_s=2)  # warm-up
        run_wrk(jobs_url, closed, connections=args.connections, duration_s=2)
        rss_before = server.memory_info().rss / 2**20
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            bare.add(
                run_wrk(bare_url, closed, connections=args.connections, duration_s=args.duration_s)
            )
            enqueue.add(
                run_wrk(jobs_url, closed, connections=args.connections, duration_s=args.duration_s)
            )
        target = 0.8 * enqueue.rate
        delay_ms = paced_delay_ms(jobs_url, folder, body, target, args.connections)
        paced = run_wrk(
            jobs_url,
            wrk_script(folder, body, delay_ms),
            connections=args.connections,
            duration_s=args.duration_s,
        )
        soak = None
        if args.soak_s:
            soak = run_wrk(
                jobs_url,
                wrk_script(folder, body, delay_ms),
                connections=args.connections,
                duration_s=args.soak_s,
                watch=server,
            )
        rss_after = server.memory_info().rss / 2**20
    return Result(name, bare, enqueue, paced, target, rss_before, rss_after, soak)


def paced_delay_ms(url: str, folder: Path, body: str, target: float, connections: int) -> float:
    """The per-connection pause that makes wrk send ``target`` requests/s in total.

    wrk pauses after each answer, so a connection sends one request per (pause + latency):
    start from the pause alone, measure, and take the measured latency off the pause.
    """
    pause_ms = 1000 * connections / target
    probe = run_wrk(url, wrk_script(folder, body, pause_ms), connections=connections, duration_s=3)
    latency_ms = 1000 * connections / probe.rate - pause_ms
    return max(0.0, pause_ms - latency_ms)


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n### HTTP intake ({args.connections} connections, {args.duration_s:g} s x "
        f"{args.repeats}, ~{args.body_bytes} B bodies, wrk on the same machine)\n"
    )
    print("| backend | endpoint | requests/s | p50 ms | p99 ms | note |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = r.enqueue.rate / r.bare.rate if r.bare.rate else float("nan")
        print(r.bare.row(r.backend, "bare (no enqueue)"))
        print(r.enqueue.row(r.backend, "enqueue (durable)", f"**{ratio:.0%} of bare**"))
        print(r.paced.row(r.backend, "enqueue at 80 % of max", f"target {r.paced_target:,.0f}/s"))
        if r.soak is not None:
            print(r.soak.row(r.backend, f"enqueue soak {args.soak_s:g} s", "at 80 % of max"))
    print("\n| backend | server RSS before | after | change |")
    print("|---|---|---|---|")
    for r in results:
        change = (r.rss_after_mb / r.rss_before_mb - 1) if r.rss_before_mb else float("nan")
        print(
            f"| {r.backend} | {r.rss_before_mb:.1f} MB | {r.rss_after_mb:.1f} MB | {change:+.1%} |"
        )
    soaked = [r for r in results if r.soak is not None and r.soak.rss_mb]
    if soaked:
        print(f"\n| backend | soak RSS at 1 min | at 5 min | at end ({args.soak_s:g} s) | peak |")
        print("|---|---|---|---|---|")
    for r in soaked:
        assert r.soak is not None
        samples = r.soak.rss_mb

        def at(t: float, samples: list[tuple[float, float]] = samples) -> str:
            rss = next((mb for s, mb in samples if s >= t), samples[-1][1])
            return f"{rss:.1f} MB"

        peak = max(mb for _s, mb in samples)
        print(f"| {r.backend} | {at(60)} | {at(300)} | {at(float('inf'))} | {peak:.1f} MB |")


def main() -> None:
    # Sibling scripts are named after the backends (redis.py, postgres.py): keep this folder off
    # the import path so they do not shadow the client libraries the backends import.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        action="append",
        choices=["sqlite", "postgres", "redis"],
        help="Only this backend (repeat for several). Default: every available one.",
    )
    parser.add_argument("--duration-s", type=float, default=10.0, help="Length of each phase.")
    parser.add_argument("--repeats", type=int, default=3, help="Bare/enqueue pairs per backend.")
    parser.add_argument("--connections", type=int, default=64, help="Concurrent connections.")
    parser.add_argument("--body-bytes", type=int, default=100, help="Approximate body size.")
    parser.add_argument("--soak-s", type=float, default=0.0, help="Extra paced run for memory.")
    parser.add_argument("--serve", nargs=2, metavar=("APP", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:  # the server subprocess
        serve_bare(args.serve[0], int(args.serve[1]))
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    chosen = args.backend or ["sqlite", "postgres", "redis"]
    results = []
    with tempfile.TemporaryDirectory(prefix="forebay-intake-") as tmp:
        folder = Path(tmp)
        for name, url in backend_urls(chosen, folder).items():
            print(f"- {name}: running", flush=True)
            try:
                results.append(bench_backend(name, url, folder, args))
            finally:
                if name != "sqlite":
                    asyncio.run(_drop(url))
    report(results, args)


if __name__ == "__main__":
    main()
