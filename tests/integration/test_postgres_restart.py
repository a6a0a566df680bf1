"""PostgreSQL restarts in the middle of a run: producers and a worker reconnect by themselves,
every job completes and none is lost.

The test runs its own PostgreSQL (``initdb`` in a temporary folder, its own port), so that it
can stop the server by its pid without disturbing anyone else's.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from forebay import BackendUnavailable, Forebay, Job, JobFilter, JobState, WorkerSettings

pytestmark = pytest.mark.slow

N_JOBS = 1200
PRODUCERS = 4


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivateServer:
    """A throwaway PostgreSQL: own data folder, own port, trust auth, stopped by its pid."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = port
        # initdb refuses to run as root: run the server as the postgres system user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def init(self) -> None:
        if self.as_user:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Fast shutdown by pid (SIGINT), and wait until the server process is gone."""
        pid = self.pid
        handle = os.pidfd_open(pid)
        try:
            os.kill(pid, signal.SIGINT)
            poller = select.poll()
            poller.register(handle, select.POLLIN)  # readable once the process has exited
            if not poller.poll(60_000):
                raise TimeoutError(f"PostgreSQL (pid {pid}) did not stop")
        finally:
            os.close(handle)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="forebay-pg-"))
    server = PrivateServer(bin_dir, root, _free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_every_job_completes_across_a_server_restart(private_pg: PrivateServer) -> None:
    url = f"{private_pg.url}?schema=forebay&reconnect_s=60&poll_ms=100"
    app = Forebay(url)
    runs: Counter[str] = Counter()
    first_quarter = asyncio.Event()
    everything = asyncio.Event()
    went_down = asyncio.Event()
    producer_errors: list[BaseException] = []

    @app.handler("restart", lease_s=2.0, concurrency=16)
    async def handle(job: Job) -> None:
        assert job.key is not None
        runs[job.key] += 1
        if len(runs) >= N_JOBS // 4:
            first_quarter.set()
        if len(runs) == N_JOBS:
            everything.set()

    async def produce(keys: list[str]) -> None:
        for i, key in enumerate(keys):
            if i == len(keys) // 2:
                await went_down.wait()  # the second half meets a server that is away
            while True:
                try:
                    await app.enqueue("restart", {"key": key}, key=key)
                    break
                except BackendUnavailable as exc:  # keyed: enqueueing again is harmless
                    producer_errors.append(exc)

    async def restart() -> None:
        await first_quarter.wait()
        await asyncio.to_thread(private_pg.stop)
        went_down.set()
        await asyncio.to_thread(private_pg.start)

    await app.open()
    worker = app.worker(
        settings=WorkerSettings(handle_signals=False, reclaim_every_s=0.5, idle_poll_s=0.5)
    )
    working = asyncio.create_task(worker.run())
    keys = [f"job-{i}" for i in range(N_JOBS)]
    pid_before = private_pg.pid
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(produce(keys[p::PRODUCERS]) for p in range(PRODUCERS)),
                restart(),
                everything.wait(),
            ),
            100,
        )
    finally:
        worker.stop()
        await asyncio.wait_for(working, 60)
    assert private_pg.pid != pid_before  # it really was another server process
    assert set(runs) == set(keys)  # none lost

    # An outcome whose commit the restart cut off leaves its job running until the lease
    # expires; then it runs again (at-least-once). Settle those now instead of waiting.
    await app.backend.reclaim_expired(now=time.time() + 3600)
    await app.run_worker(settings=WorkerSettings(handle_signals=False, burst=True))
    stored = await app.list_jobs(JobFilter(queue="restart"), limit=N_JOBS + 1)
    assert len(stored) == N_JOBS  # none enqueued twice
    assert Counter(j.state for j in stored) == {JobState.COMPLETED: N_JOBS}
    assert {j.key for j in stored} == set(keys)
    await app.close()
