"""deploy/Dockerfile builds, and the image runs forebay as it should: the `forebay` command as
entrypoint, a non-root user, an intake container and two worker containers sharing one store
finish jobs posted over HTTP, the workers answer their probes on their metrics ports and are
listed by the fleet, the HEALTHCHECK passes in each, and SIGTERM stops each cleanly.

Built with podman (or docker, when a daemon answers). The base image is
``FOREBAY_TEST_PYTHON_IMAGE``, else ``python:3.12-slim`` when it is already present, else one
made from Debian's packages with debootstrap (as root; kept for the next run). Where no runtime
or base image can be had, each test is skipped with the reason, never passed."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from forebay import testing
from forebay.backends import backend_from_url
from forebay.testing import isolated_url
from tests.acceptance.test_serve import free_port
from tests.servers import PG_URL, require_server

# Building the base image and forebay's image takes minutes on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/forebay-test:latest"
DEBIAN_BASE = "localhost/forebay-test-python:bookworm"
TOKEN = "deploy-test-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
UID = 10001

APP = """
import asyncio
from forebay import Forebay

app = Forebay()


@app.handler("documents", concurrency=4)
async def ingest(job):
    await asyncio.sleep(0.01)
    return {"pages": len(job.payload["url"])}
"""


@dataclass
class Runtime:
    """A container runtime that answers, and how to build and start containers with it."""

    binary: str
    build_flags: list[str] = field(default_factory=list)
    run_flags: list[str] = field(default_factory=list)

    @property
    def podman(self) -> bool:
        return Path(self.binary).name == "podman"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], check=check, capture_output=True, text=True, timeout=900
        )

    def image_exists(self, image: str) -> bool:
        return self("image", "inspect", image, check=False).returncode == 0


def _runtime_answers(binary: str | None) -> bool:
    if binary is None:
        return False
    probe = subprocess.run([binary, "info"], capture_output=True, text=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    podman, docker = shutil.which("podman"), shutil.which("docker")
    if _runtime_answers(podman):
        assert podman is not None
        # chroot isolation: RUN steps need no OCI runtime (nor cgroups) to build.
        return Runtime(podman, build_flags=["--isolation", "chroot", "--format", "docker"])
    if _runtime_answers(docker):
        assert docker is not None
        return Runtime(docker)
    pytest.skip("no container runtime answers here (podman info / docker info fail)")


def _debian_base(runtime: Runtime, folder: Path) -> str:
    """A Python base image from Debian's packages, trusting this machine's CA bundle (a
    TLS-inspecting proxy's included) for pip in the build."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not runtime.podman or os.geteuid() != 0 or not Path(debootstrap).exists():
        pytest.skip(
            "no Python base image: set FOREBAY_TEST_PYTHON_IMAGE, pull python:3.12-slim, "
            "or run as root with podman and debootstrap installed"
        )
    rootfs = folder / "rootfs"
    subprocess.run(
        [
            debootstrap,
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/")
    archive = folder / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True, timeout=600)
    runtime(
        "import",
        "--change",
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        str(archive),
        DEBIAN_BASE,
    )
    return DEBIAN_BASE


def _base_image(runtime: Runtime, folder: Path) -> str:
    given = os.environ.get("FOREBAY_TEST_PYTHON_IMAGE")
    if given:
        return given
    for image in ("docker.io/library/python:3.12-slim", DEBIAN_BASE):
        if runtime.image_exists(image):
            return image
    return _debian_base(runtime, folder)


@pytest.fixture(scope="module")
def image(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> str:
    base = _base_image(runtime, tmp_path_factory.mktemp("base"))
    before = runtime("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    built = runtime(
        "build",
        *runtime.build_flags,
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-arg",
        "FOREBAY_EXTRAS=postgres,redis",
        "-f",
        str(ROOT / "deploy" / "Dockerfile"),
        "-t",
        IMAGE,
        str(ROOT),
        check=False,
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    after = runtime("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if before and before != after:
        runtime("rmi", before, check=False)  # the previous run's image, now untagged
    return IMAGE


def _run_flag_sets(runtime: Runtime) -> Iterator[list[str]]:
    yield []
    if runtime.podman and shutil.which("runc"):
        # Where crun refuses this machine's cgroups, and the host's limits cannot be raised.
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
        yield [
            "--runtime",
            "runc",
            "--ulimit",
            f"nofile={nofile}:{nofile}",
            "--ulimit",
            "nproc=4096:4096",
        ]


@pytest.fixture(scope="module")
def started(runtime: Runtime, image: str) -> Runtime:
    """The runtime, with the flags that let it start a container of the image here."""
    errors = []
    for flags in _run_flag_sets(runtime):
        probe = runtime("run", "--rm", *flags, image, "--version", check=False)
        if probe.returncode == 0:
            runtime.run_flags = flags
            return runtime
        errors.append(probe.stderr.strip().splitlines()[-1:])
    pytest.skip(f"the image builds, but no container starts here: {errors}")


def test_forebay_is_the_entrypoint_and_runs_as_a_non_root_user(started: Runtime) -> None:
    helped = started("run", "--rm", *started.run_flags, IMAGE, "--help")
    assert "serve" in helped.stdout and "worker" in helped.stdout
    who = started("run", "--rm", *started.run_flags, "--entrypoint", "id", IMAGE)
    assert who.stdout.startswith(f"uid={UID}(forebay) gid={UID}(forebay)")
    # The extras asked for are installed; the others are not.
    probe = "import asyncpg, redis, importlib.util as u; print(u.find_spec('pyarrow') is None)"
    extras = started(
        "run", "--rm", *started.run_flags, "--entrypoint", "python3", IMAGE, "-c", probe
    )
    assert extras.stdout.strip() == "True"


@dataclass
class Fleet:
    runtime: Runtime
    base: str
    intake: str
    workers: list[str]
    metrics_ports: list[int]

    def logs(self) -> str:
        return "\n".join(
            self.runtime("logs", name, check=False).stderr[-2000:]
            for name in [self.intake, *self.workers]
        )


def _drop(url: str) -> None:
    async def drop() -> None:
        store = backend_from_url(url)
        await store.open()
        await store.drop_everything()
        await store.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The fleet's store: SQLite in a folder the containers share, or PostgreSQL (a schema of
    its own, dropped afterwards) as in deploy/compose.yaml."""
    if request.param == "sqlite":
        yield "sqlite:////data/forebay.db"
        return
    require_server("PostgreSQL", PG_URL)
    url = isolated_url(PG_URL)
    try:
        yield url
    finally:
        _drop(url)


@pytest.fixture
def fleet(started: Runtime, store_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """An intake container (`serve --no-workers`) and two worker containers on one store, on
    the host's network."""
    app_dir, data = tmp_path / "app", tmp_path / "data"
    app_dir.mkdir(mode=0o755)
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chown(data, UID, UID) if os.geteuid() == 0 else os.chmod(data, 0o777)
    (app_dir / "app.py").write_text(APP)
    os.chmod(app_dir / "app.py", 0o644)
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    common = [
        *started.run_flags,
        # As deploy/kubernetes runs them: a read-only root filesystem, a scratch /tmp.
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--network",
        "host",
        "-v",
        f"{app_dir}:/app:ro",
        "-v",
        f"{data}:/data",
        "-e",
        f"FOREBAY_URL={store_url}",
        "-e",
        f"FOREBAY_PORT={port}",
        "-e",
        f"FOREBAY_API_TOKENS={TOKEN}:enqueue+read+admin",
    ]
    intake = f"forebay-test-intake-{tag}"
    workers = [f"forebay-test-worker-{tag}-{n}" for n in (1, 2)]
    names: list[str] = []
    try:
        started("run", "-d", "--name", intake, *common, IMAGE, "serve", "app:app", "--no-workers")
        names.append(intake)
        metrics_ports = [free_port() for _ in workers]
        for name, metrics_port in zip(workers, metrics_ports, strict=True):
            started(
                "run",
                "-d",
                "--name",
                name,
                *common,
                # As in deploy/compose.yaml, where each worker has a network of its own.
                "-e",
                f"FOREBAY_HEALTHCHECK_URL=http://127.0.0.1:{metrics_port}/healthz",
                "-e",
                "FOREBAY_REGISTRY_EVERY_S=1",
                IMAGE,
                "worker",
                "app:app",
                "--metrics-port",
                str(metrics_port),
            )
            names.append(name)
        yield Fleet(started, f"http://127.0.0.1:{port}", intake, workers, metrics_ports)
    finally:
        for name in names:
            started("rm", "-f", "-t", "0", name, check=False)


def _answers(*urls: str) -> bool:
    try:
        return all(httpx.get(url, timeout=1).status_code == 200 for url in urls)
    except httpx.TransportError:
        return False


def _post_jobs(fleet: Fleet, count: int) -> list[int]:
    ids = []
    for n in range(count):
        posted = httpx.post(
            f"{fleet.base}/v1/queues/documents/jobs",
            json={"payload": {"url": "x" * n}},
            headers=HEADERS,
        )
        assert posted.status_code == 201, posted.text
        ids.append(posted.json()["id"])
    return ids


def _all_completed(fleet: Fleet, ids: list[int]) -> bool:
    for job_id in ids:
        got = httpx.get(f"{fleet.base}/v1/jobs/{job_id}", headers=HEADERS)
        assert got.status_code == 200, got.text
        if got.json()["state"] != "completed":
            return False
    return True


def _worker_records(fleet: Fleet) -> list[dict[str, Any]]:
    """`forebay workers --json`, run in the intake's container."""
    listed = fleet.runtime("exec", fleet.intake, "forebay", "workers", "--json")
    records: list[dict[str, Any]] = json.loads(listed.stdout)["workers"]
    return records


def test_an_intake_and_two_workers_in_containers_finish_jobs_posted_over_http(
    fleet: Fleet,
) -> None:
    testing.wait_until(
        lambda: _answers(f"{fleet.base}/healthz"),
        timeout_s=60,
        what="the intake's /healthz",
        context=fleet.logs,
    )
    # What the Kubernetes probes of deploy/kubernetes ask each worker, on its metrics port.
    testing.wait_until(
        lambda: _answers(*(f"http://127.0.0.1:{p}/readyz" for p in fleet.metrics_ports)),
        timeout_s=60,
        what="the workers' /readyz",
        context=fleet.logs,
    )
    ids = _post_jobs(fleet, 20)
    testing.wait_until(
        lambda: _all_completed(fleet, ids), timeout_s=60, what="20 jobs done", context=fleet.logs
    )
    last = httpx.get(f"{fleet.base}/v1/jobs/{ids[-1]}", headers=HEADERS).json()
    assert last["result"] == {"pages": 19}

    # Both workers registered in the store, seen from the intake's container; their counts
    # are saved at each beat (every second here).
    testing.wait_until(
        lambda: sum(r["completed"] for r in _worker_records(fleet)) == 20,
        timeout_s=30,
        what="the workers' records to count 20 jobs",
        context=fleet.logs,
    )
    records = _worker_records(fleet)
    assert len(records) == 2
    assert all("documents" in r["queues"] and not r["stopping"] for r in records), records
    assert len({r["id"] for r in records}) == 2  # each pid 1, in a container of its own
    metrics = httpx.get(f"http://127.0.0.1:{fleet.metrics_ports[0]}/metrics").text
    assert "forebay_workers 2.0" in metrics

    if fleet.runtime.podman:
        # The image's HEALTHCHECK, run as the runtime runs it: the intake's on its HTTP port,
        # each worker's on its metrics port (FOREBAY_HEALTHCHECK_URL).
        for name in [fleet.intake, *fleet.workers]:
            check = fleet.runtime("healthcheck", "run", name, check=False)
            assert check.returncode == 0, name + check.stdout + check.stderr

    # SIGTERM: each container shuts down gracefully and exits 0, well inside its grace.
    for name in [fleet.intake, *fleet.workers]:
        fleet.runtime("stop", "-t", "40", name)
        code = fleet.runtime("inspect", "--format", "{{.State.ExitCode}}", name).stdout
        assert code.strip() == "0", fleet.logs()


def test_a_named_volume_on_data_holds_an_sqlite_store(started: Runtime) -> None:
    """docs/operations.md's `docker run ... -v forebay-data:/data` with
    FOREBAY_URL=sqlite:////data/forebay.db: a fresh named volume on /data starts owned by the
    image's user, so forebay creates its store there (the app's folder being read-only)."""
    volume = f"forebay-test-data-{uuid.uuid4().hex[:8]}"
    started("volume", "create", volume)
    try:
        common = [*started.run_flags, "--read-only", "-v", f"{volume}:/data"]
        migrated = started(
            "run",
            "--rm",
            *common,
            "-e",
            "FOREBAY_URL=sqlite:////data/forebay.db",
            IMAGE,
            "migrate",
            check=False,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        listed = started(
            "run", "--rm", *common, "--entrypoint", "ls", IMAGE, "-ln", "/data", check=False
        )
        assert "forebay.db" in listed.stdout, listed.stdout + listed.stderr
        assert f" {UID} {UID} " in listed.stdout
    finally:
        started("volume", "rm", "-f", volume, check=False)


def test_the_healthcheck_fails_when_nothing_answers(started: Runtime) -> None:
    """The HEALTHCHECK command itself: it fails (exit 1) where no /healthz answers."""
    inspect = started("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", IMAGE)
    test = json.loads(inspect.stdout)
    assert test[0] == "CMD"
    refused = started(
        "run",
        "--rm",
        *started.run_flags,
        "--network",
        "none",
        "--entrypoint",
        test[1],
        IMAGE,
        *test[2:],
        check=False,
    )
    assert refused.returncode == 1
    assert "URLError" in refused.stderr or "Connection refused" in refused.stderr
