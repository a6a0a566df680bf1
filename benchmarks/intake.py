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
maximum rate to report the ack latency a sender sees under steady load, and the server's
resident memory is shown before and after (``--soak-s 600`` for the 10-minute memory check).

The paced phase is an open loop, like ``labelstudio.py``'s: request ``n`` is due at
``start + n / rate`` whatever the answers before it did, it waits for a free connection (of
``--connections``) if none is, and its latency runs from its due time (not its send time: a
late send is latency too) to its answer. wrk's ``delay()`` would pause after each answer and
time from the send, hiding the wait of a slow server (coordinated omission). The paced client is
a minimal asyncio HTTP/1.1 client in this process; the rate it reached is printed beside the
target (below it: the client or the server could not keep up, and the latencies show it).

Beside each rate: CPU seconds per 1,000 requests of the server process and of the client (wrk,
or this process for the paced phase), on the same cores. The ratios come last.

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
import resource
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
from typing import TYPE_CHECKING, Any

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
    server_cpu: list[float] = field(default_factory=list)  # CPU s per 1,000 requests
    client_cpu: list[float] = field(default_factory=list)  # CPU s per 1,000 requests

    def add(self, other: Measure) -> None:
        self.rps += other.rps
        self.p50_ms += other.p50_ms
        self.p99_ms += other.p99_ms
        self.errors += other.errors
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu

    @property
    def rate(self) -> float:
        return statistics.median(self.rps) if self.rps else float("nan")

    def row(self, backend: str, endpoint: str, note: str = "") -> str:
        if not self.rps:
            return f"| {backend} | {endpoint} | n/a | | | | | {note} |"
        p50 = statistics.median(self.p50_ms)
        p99 = statistics.median(self.p99_ms)
        spread = f" [{min(self.rps):,.0f}-{max(self.rps):,.0f}]" if len(self.rps) > 1 else ""
        errors = f"{self.errors} non-2xx/errors; " if self.errors else ""
        return (
            f"| {backend} | {endpoint} | {self.rate:,.0f}{spread} | {p50:.2f} | {p99:.2f} "
            f"| {_median(self.server_cpu):.3f} | {_median(self.client_cpu):.3f} "
            f"| {errors}{note} |"
        )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def server_cpu_s(server: psutil.Process) -> float:
    """CPU seconds (user + system) of the server process and its live children so far."""
    total = 0.0
    for proc in [server, *server.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited for) children: wrk's, after its run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


# -- wrk ----------------------------------------------------------------------------------------
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise RuntimeError(f"unexpected duration in wrk's output: {text!r}")
    return float(found.group(1)) * _UNITS_MS[found.group(2)]


def parse_wrk(output: str) -> tuple[Measure, int]:
    """wrk's figures, and how many requests it completed."""
    measure = Measure()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    done = re.search(r"(\d+) requests in ", output)
    if not (rps and p50 and p99 and done):
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
    return measure, int(done.group(1))


def wrk_script(folder: Path, body: str) -> Path:
    script = folder / f"post-{secrets.token_hex(3)}.lua"
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(body)}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    script.write_text("\n".join(lines) + "\n")
    return script


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    server: psutil.Process | None = None,
) -> Measure:
    """One closed-loop wrk run (each connection sends as soon as it has its answer); with
    ``server``, the CPU of that process and of wrk per 1,000 requests."""
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
    server0 = server_cpu_s(server) if server else 0.0
    client0 = children_cpu_s()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    client1 = children_cpu_s()
    measure, requests = parse_wrk(done.stdout)
    if server and requests:
        measure.server_cpu.append((server_cpu_s(server) - server0) / requests * 1000)
        measure.client_cpu.append((client1 - client0) / requests * 1000)
    return measure


# -- the paced (open-loop) client ---------------------------------------------------------------
class Poster:
    """A minimal HTTP/1.1 keep-alive client with a fixed pool of connections: far cheaper per
    request than httpx, so the paced phase measures the server more than the client."""

    def __init__(self, url: str, body: str, connections: int) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        payload = body.encode()
        self.request = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        self.connections = connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]
        self._idle = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self.connections):
            self._idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def post(self) -> int:
        """Send the request on the next free connection; the answer's status (0: no answer)."""
        pair = await self._idle.get()
        try:
            if pair is None:  # a connection that failed before: open it again
                pair = await asyncio.open_connection(self.host, self.port)
            reader, writer = pair
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lowered = head.lower()
            at = lowered.index(b"content-length:") + 15
            await reader.readexactly(int(lowered[at : lowered.index(b"\r\n", at)]))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            if pair is not None:
                pair[1].close()
            self._idle.put_nowait(None)
            return 0
        except asyncio.CancelledError:  # timed out: the connection is in an unknown state
            if pair is not None:
                pair[1].close()
            self._idle.put_nowait(None)
            raise
        self._idle.put_nowait(pair)
        return status

    async def close(self) -> None:
        while not self._idle.empty():
            pair = self._idle.get_nowait()
            if pair is not None:
                pair[1].close()


async def paced(
    url: str,
    body: str,
    *,
    rate: float,
    duration_s: float,
    connections: int,
    server: psutil.Process,
    watch_memory: bool = False,
) -> tuple[Measure, float]:
    """Post at ``rate`` for ``duration_s``, open loop: return the figures (latency from each
    request's due time to its 2xx answer) and the rate reached (2xx answers per second, from
    the first due time to the last answer)."""
    poster = Poster(url, body, connections)
    await poster.open()
    latencies: list[float] = []
    errors = 0
    samples: list[tuple[float, float]] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def post(due: float) -> None:
        nonlocal errors
        try:
            status = await asyncio.wait_for(poster.post(), timeout=10)  # as wrk's
        except TimeoutError:
            status = 0
        if 200 <= status < 300:
            latencies.append(now() - due)
        else:
            errors += 1

    async def sample_memory() -> None:
        while True:
            samples.append((now() - start, server.memory_info().rss / 2**20))
            await asyncio.sleep(5)

    now = time.perf_counter
    total = max(1, int(rate * duration_s))
    server0, client0 = server_cpu_s(server), own_cpu_s()
    start = now()
    sampler = asyncio.create_task(sample_memory()) if watch_memory else None
    for n in range(total):
        due = start + n / rate
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(post(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    elapsed = now() - start
    server1, client1 = server_cpu_s(server), own_cpu_s()
    if sampler is not None:
        sampler.cancel()
        samples.append((elapsed, server.memory_info().rss / 2**20))
    await poster.close()
    measure = Measure(errors=errors, rss_mb=samples)
    if latencies:
        latencies.sort()
        measure.rps.append(len(latencies) / elapsed)
        measure.p50_ms.append(statistics.median(latencies) * 1000)
        measure.p99_ms.append(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000)
        measure.server_cpu.append((server1 - server0) / total * 1000)
        measure.client_cpu.append((client1 - client0) / total * 1000)
    return measure, len(latencies) / elapsed


def run_paced(url: str, body: str, **kwargs: Any) -> tuple[Measure, float]:
    """:func:`paced` on a loop of its own (uvloop where it is there, as forebay's server runs)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(paced(url, body, **kwargs))
    return uvloop.run(paced(url, body, **kwargs))


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
    paced_reached: float
    rss_before_mb: float
    rss_after_mb: float
    soak: Measure | None = None
    soak_reached: float = float("nan")


def bench_backend(name: str, url: str, folder: Path, args: argparse.Namespace) -> Result:
    payload = {"doc": "x" * max(0, args.body_bytes - 40), "source": "bench"}
    body = json.dumps({"payload": payload})
    closed = wrk_script(folder, body)
    bare, enqueue = Measure(), Measure()
    with serving(url, folder) as (base, server):
        jobs_url = f"{base}/v1/queues/bench/jobs"
        bare_url = base + BARE_PATH.format(queue="bench")
        run_wrk(bare_url, closed, connections=args.connections, duration_s=2)  # warm-up
        run_wrk(jobs_url, closed, connections=args.connections, duration_s=2)
        rss_before = server.memory_info().rss / 2**20
        closed_run = {"connections": args.connections, "duration_s": args.duration_s}
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            bare.add(run_wrk(bare_url, closed, server=server, **closed_run))
            enqueue.add(run_wrk(jobs_url, closed, server=server, **closed_run))
        target = 0.8 * enqueue.rate
        paced_run = {"rate": target, "connections": args.connections, "server": server}
        paced, reached = run_paced(jobs_url, body, duration_s=args.duration_s, **paced_run)
        soak, soak_reached = None, float("nan")
        if args.soak_s:
            soak, soak_reached = run_paced(
                jobs_url, body, duration_s=args.soak_s, watch_memory=True, **paced_run
            )
        rss_after = server.memory_info().rss / 2**20
    return Result(
        name, bare, enqueue, paced, target, reached, rss_before, rss_after, soak, soak_reached
    )


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n### HTTP intake ({args.connections} connections, {args.duration_s:g} s x "
        f"{args.repeats}, ~{args.body_bytes} B bodies, the client on the same machine)\n"
    )
    print(
        "Closed loop (wrk): latency from each send. Paced (open loop, this script's client): "
        "latency from each request's due time; requests/s is the rate of 2xx answers reached.\n"
    )
    print(
        "| backend | endpoint | requests/s | p50 ms | p99 ms | server CPU s / 1,000 requests "
        "| client CPU s / 1,000 requests | note |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.bare.row(r.backend, "bare (no enqueue), closed loop"))
        print(r.enqueue.row(r.backend, "enqueue (durable), closed loop"))
        print(
            r.paced.row(
                r.backend,
                "enqueue paced at 80 % of max",
                f"reached {r.paced_reached:,.0f}/s of a {r.paced_target:,.0f}/s target",
            )
        )
        if r.soak is not None:
            print(
                r.soak.row(
                    r.backend,
                    f"enqueue paced, soak {args.soak_s:g} s",
                    f"reached {r.soak_reached:,.0f}/s of a {r.paced_target:,.0f}/s target",
                )
            )
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
    print("\n### ratios (medians of this run)\n")
    for r in results:
        ratio = r.enqueue.rate / r.bare.rate if r.bare.rate else float("nan")
        cpu = _median(r.enqueue.server_cpu) / _median(r.bare.server_cpu)
        print(f"* {r.backend}: enqueue / bare requests/s (closed loop): {ratio:.2f}x")
        print(f"* {r.backend}: enqueue / bare server CPU per request: {cpu:.2f}x")
        print(
            f"* {r.backend}: paced rate reached / target: {r.paced_reached / r.paced_target:.2f}x"
        )


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
