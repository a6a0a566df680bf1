"""Refused credentials are reported at once, naming the server with its password redacted:
waiting never makes a server accept a wrong password, so nothing retries them.

Redis runs as a private ``redis-server --requirepass`` on a free port in the test's folder;
PostgreSQL is the test server, asked for a role and a database that do not exist.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from forebay import Forebay
from forebay.errors import BackendError, BackendUnavailable
from tests.servers import PG_URL, require_server, unique_name

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-pass"
FAST_S = 3.0
"""Much less than the default 10 s reconnect window a retried failure would take."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    """A private Redis server that requires ``PASSWORD``; its port."""
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; CI must run every backend")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # wait for the server to listen (bounded)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _refused_at_once(url: str) -> str:
    """Open an app on ``url``: it must fail with a BackendError (not 'unreachable') quickly."""
    import asyncio

    async def attempt() -> None:
        async with Forebay(url):
            pass

    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        asyncio.run(attempt())
    assert time.monotonic() - started < FAST_S
    assert not isinstance(caught.value, BackendUnavailable)
    return str(caught.value)


@pytest.mark.parametrize("given", ["wrong", None], ids=["wrong-password", "no-password"])
def test_redis_refuses_credentials_at_once(redis_with_password: int, given: str | None) -> None:
    auth = f":{given}@" if given else ""
    url = f"redis://{auth}127.0.0.1:{redis_with_password}/0"
    message = _refused_at_once(url)
    assert "refused the credentials" in message
    assert f"127.0.0.1:{redis_with_password}" in message
    assert "wrong" not in message  # the password is never shown
    # The right password opens it: the refusal was about the credentials.
    ok = f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password}/0?prefix={unique_name()}"
    import asyncio

    async def works() -> None:
        async with Forebay(ok) as app:
            await app.backend.ping()
            await app.backend.drop_everything()

    asyncio.run(works())


def _pg(user: str | None = None, database: str | None = None, password: str | None = None) -> str:
    parts = urlsplit(PG_URL)
    host = parts.netloc.rsplit("@", 1)[-1]
    name = user or parts.username or "postgres"
    secret = f":{password}" if password else ""
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=f"{name}{secret}@{host}", path=path))


@pytest.mark.parametrize("what", ["role", "database"])
def test_postgres_refuses_unknown_role_or_database_at_once(what: str) -> None:
    require_server("PostgreSQL", PG_URL)
    missing = unique_name("missing")
    url = _pg(user=missing, password="hunter2") if what == "role" else _pg(database=missing)
    message = _refused_at_once(url)
    assert "PostgreSQL at postgresql://" in message and "refused the connection" in message
    assert missing in message and "does not exist" in message
    assert "hunter2" not in message


def test_cli_says_which_store_refused(redis_with_password: int) -> None:
    """The CLI reports it as one line at once, with a non-zero exit code."""
    url = f"redis://:wrong@127.0.0.1:{redis_with_password}/0"
    env = {k: v for k, v in os.environ.items() if k != "FOREBAY_URL"}
    env["PYTHONPATH"] = str(ROOT / "src")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "forebay", "stats", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert time.monotonic() - started < FAST_S + 2  # the interpreter's start-up included
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert "refused the credentials" in errors[0] and ":***@" in errors[0]
    assert "wrong" not in done.stderr
