"""Where the test servers are, and how each backend under test gets an isolated store.

PostgreSQL and Redis are real servers (127.0.0.1:5432 and 127.0.0.1:6379 by default;
``FOREBAY_TEST_PG`` and ``FOREBAY_TEST_REDIS`` point elsewhere). A test that needs a missing
server is skipped on a laptop but fails when ``CI`` is set, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from forebay.testing import isolated_url

PG_URL = os.environ.get("FOREBAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FOREBAY_TEST_REDIS", "redis://127.0.0.1:6379/0")

BACKENDS = ("sqlite", "postgres", "redis")


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, url: str) -> None:
    """Skip (locally) or fail (in CI) when the server behind ``url`` does not answer."""
    if reachable(url):
        return
    message = f"{name} is not reachable at {url}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run every backend", pytrace=False)
    pytest.skip(message)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def backend_url(kind: str, tmp_path: Path) -> str:
    """A URL for a fresh, isolated store of backend ``kind``."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'forebay.db'}"
    if kind == "postgres":
        require_server("PostgreSQL", PG_URL)
        return isolated_url(PG_URL)
    if kind == "redis":
        require_server("Redis", REDIS_URL)
        return isolated_url(REDIS_URL)
    raise ValueError(kind)
