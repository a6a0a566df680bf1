"""The redis backend against private Redis servers this module starts and stops (by pid).

* a restart in the middle of a run: producers and a worker reconnect by themselves, and every
  job whose enqueue was acknowledged before the restart completes;
* the start-up warnings when the server can lose jobs (eviction, persistence off, CONFIG GET
  not allowed);
* ``rediss://`` with TLS and a password, in the form managed services such as Upstash give.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from forebay import (
    BackendError,
    BackendUnavailable,
    Forebay,
    Job,
    JobState,
    NewJob,
    WorkerSettings,
)
from forebay.backends import backend_from_url

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("CI"), reason="redis-server is not installed"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own: its own port and directory, stopped by its pid."""

    def __init__(self, directory: Path, *options: str, tls: dict[str, Path] | None = None) -> None:
        if REDIS_SERVER is None:
            pytest.fail("redis-server is not installed; CI must run the private-server tests")
        self.dir = directory
        self.port = free_port()
        self.options = list(options)
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        assert REDIS_SERVER is not None
        argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(self.dir), "--daemonize", "no"]
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            argv += ["--port", "0", "--tls-port", str(self.port)]
            argv += [
                "--tls-cert-file",
                str(self.tls["cert"]),
                "--tls-key-file",
                str(self.tls["key"]),
            ]
            argv += ["--tls-ca-cert-file", str(self.tls["cert"]), "--tls-auth-clients", "no"]
        return argv + self.options

    def start(self) -> None:
        """Start it and return once it says it accepts connections (its log, read by a thread)."""
        self.proc = subprocess.Popen(
            self.argv(), cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        ready = threading.Event()
        log: list[str] = []

        def read(stream: IO[bytes]) -> None:
            with stream:
                for raw in stream:
                    line = raw.decode(errors="replace")
                    log.append(line)
                    if "Ready to accept connections" in line:
                        ready.set()

        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        if not ready.wait(30):
            self.stop(signal.SIGKILL)
            raise RuntimeError("redis-server did not start:\n" + "".join(log[-20:]))

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (with appendonly, the AOF is complete); SIGKILL: a crash."""
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=30)  # it closes the pipe at end of file
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[type[PrivateRedis]]:
    """A factory of private servers; every one started is stopped afterwards."""
    started: list[PrivateRedis] = []

    class Tracked(PrivateRedis):
        def start(self) -> None:
            started.append(self)
            super().start()

    yield Tracked
    for server in started:
        if server.proc is not None:
            server.stop(signal.SIGKILL)


# -- restart ----------------------------------------------------------------------------------
N_PRODUCERS = 3
PER_PRODUCER = 150


async def test_restart_mid_run_loses_no_acknowledged_job(
    private_redis: type[PrivateRedis], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = private_redis(data, "--appendonly", "yes", "--appendfsync", "always", "--save", "")
    server.start()
    url = f"{server.url}?prefix=restart&reconnect_s=20"
    app = Forebay(url)
    effects: dict[str, int] = {}
    acknowledged: dict[str, int] = {}
    expected: set[str] = set()  # filled once the producers are done
    half = asyncio.Event()
    all_ran = asyncio.Event()

    def check() -> None:
        if expected and expected <= effects.keys():
            all_ran.set()

    @app.handler("docs", concurrency=8, lease_s=2.0)
    async def handle(job: Job) -> None:
        assert job.key is not None
        effects[job.key] = effects.get(job.key, 0) + 1
        check()

    async def produce(p: int) -> None:
        producer = Forebay(url)  # its own connections, like a separate producer process
        try:
            for i in range(PER_PRODUCER):
                key = f"p{p}-{i}"
                while True:
                    try:
                        job = await producer.enqueue("docs", {"i": i}, key=key)
                        break
                    except BackendUnavailable:
                        continue  # not acknowledged: the same key again (dedupe makes it safe)
                acknowledged[key] = job.id
                if len(acknowledged) >= N_PRODUCERS * PER_PRODUCER // 2:
                    half.set()
                await asyncio.sleep(0)  # interleave the producers
        finally:
            await producer.close()

    worker = app.worker(settings=WorkerSettings(handle_signals=False, reclaim_every_s=0.2))
    running = asyncio.create_task(worker.run())
    producers = [asyncio.create_task(produce(p)) for p in range(N_PRODUCERS)]
    await asyncio.wait_for(half.wait(), 60)
    acknowledged_before = dict(acknowledged)
    await asyncio.to_thread(server.stop)  # SIGTERM: producers and worker see the server go
    await asyncio.to_thread(server.start)  # same port, same directory: the AOF is replayed
    await asyncio.wait_for(asyncio.gather(*producers), 120)
    expected = set(acknowledged)
    check()
    await asyncio.wait_for(all_ran.wait(), 120)
    worker.stop()  # graceful: outcomes still in flight are written before it returns
    await asyncio.wait_for(running, 30)
    try:
        states = {(await app.get_job(job_id)).state for job_id in acknowledged.values()}
    finally:
        await app.close()
        server.stop()

    assert len(acknowledged_before) >= N_PRODUCERS * PER_PRODUCER // 2
    assert expected == {f"p{p}-{i}" for p in range(N_PRODUCERS) for i in range(PER_PRODUCER)}
    assert set(effects) == expected
    assert states == {JobState.COMPLETED}


async def test_crash_of_the_server_keeps_acknowledged_jobs_with_appendfsync_always(
    private_redis: type[PrivateRedis], tmp_path: Path
) -> None:
    server = private_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always", "--save", "")
    server.start()
    url = f"{server.url}?prefix=crash&reconnect_s=20"
    app = Forebay(url)
    jobs = await app.enqueue_many([NewJob.create("docs", {"i": i}) for i in range(200)])
    await app.close()
    server.stop(signal.SIGKILL)
    server.start()
    app = Forebay(url)
    try:
        counts = {c.queue: c for c in await app.counts()}
        assert counts["docs"].queued == 200
        assert (await app.get_job(jobs[-1].id)).payload == {"i": 199}
    finally:
        await app.close()


# -- start-up warnings ------------------------------------------------------------------------
async def test_warns_when_the_server_may_evict_jobs(
    private_redis: type[PrivateRedis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis(tmp_path, "--maxmemory-policy", "allkeys-lru", "--appendonly", "yes")
    server.start()
    backend = backend_from_url(server.url)
    with caplog.at_level(logging.WARNING, logger="forebay.backends.redis"):
        await backend.open()
    await backend.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "forebay.backends.redis"]
    assert any("allkeys-lru" in m and "noeviction" in m for m in messages), messages
    assert not any("persistence off" in m for m in messages), messages


async def test_warns_when_persistence_is_off(
    private_redis: type[PrivateRedis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis(tmp_path, "--appendonly", "no", "--save", "")
    server.start()
    backend = backend_from_url(server.url)
    with caplog.at_level(logging.WARNING, logger="forebay.backends.redis"):
        await backend.open()
    await backend.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "forebay.backends.redis"]
    assert any("persistence off" in m and "appendonly yes" in m for m in messages), messages
    assert not any("maxmemory-policy" in m for m in messages), messages


async def test_no_warning_when_the_server_keeps_jobs(
    private_redis: type[PrivateRedis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis(tmp_path, "--appendonly", "yes", "--maxmemory-policy", "noeviction")
    server.start()
    backend = backend_from_url(server.url)
    with caplog.at_level(logging.WARNING, logger="forebay.backends.redis"):
        await backend.open()
    await backend.close()
    assert not [r for r in caplog.records if r.name == "forebay.backends.redis"]


async def test_says_so_when_config_get_is_not_allowed(
    private_redis: type[PrivateRedis], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # managed services (Upstash, ...) refuse CONFIG; the backend must still open
    server = private_redis(tmp_path, "--rename-command", "CONFIG", "")
    server.start()
    backend = backend_from_url(server.url)
    with caplog.at_level(logging.WARNING, logger="forebay.backends.redis"):
        await backend.open()
    try:
        job = (await backend.enqueue([NewJob.create("q", {})]))[0]
        assert (await backend.get_job(job.id)) is not None
    finally:
        await backend.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "forebay.backends.redis"]
    assert any("CONFIG GET is not allowed" in m for m in messages), messages


# -- TLS and a password (the Upstash URL form) ------------------------------------------------
def make_certificate(directory: Path) -> dict[str, Path]:
    cert, key = directory / "redis.crt", directory / "redis.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return {"cert": cert, "key": key}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_rediss_with_tls_and_a_token(
    private_redis: type[PrivateRedis], tmp_path: Path
) -> None:
    tls = make_certificate(tmp_path)
    server = private_redis(tmp_path, "--requirepass", "s3cr3t-token", tls=tls)
    server.start()
    # the form Upstash gives: rediss://default:<token>@<host>:6379
    url = f"rediss://default:s3cr3t-token@127.0.0.1:{server.port}?ssl_ca_certs={tls['cert']}"
    app = Forebay(url)
    done: list[int] = []

    @app.handler("docs")
    async def handle(job: Job) -> None:
        done.append(job.id)

    try:
        job = await app.enqueue("docs", {"over": "tls"})
        await app.run_worker(burst=True, settings=WorkerSettings(handle_signals=False))
        assert done == [job.id]
        assert "s3cr3t" not in repr(app.backend)
    finally:
        await app.close()

    wrong = backend_from_url(
        f"rediss://default:wrong@127.0.0.1:{server.port}?ssl_ca_certs={tls['cert']}"
    )
    with pytest.raises(BackendError, match="password") as info:
        await wrong.open()
    assert not isinstance(info.value, BackendUnavailable)
