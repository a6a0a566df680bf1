from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from forebay import Forebay
from forebay.backends import Backend
from forebay.testing import isolated_store
from tests.servers import BACKENDS, backend_url


def pytest_configure(config: pytest.Config) -> None:
    """Subprocesses get the environment that ``os.environ`` shows. pytest imports readline
    before it loads this file, and GNU readline writes LINES and COLUMNS (80 and 24 without a
    terminal) into the process's C environment only: every subprocess inherited them, the
    pytest-xdist workers too, where the CLI's rich tables (forebay/cli/output.py) were then
    drawn 80 columns wide instead of the 200 they get in one process."""
    for name in ("COLUMNS", "LINES"):
        if name not in os.environ:
            os.unsetenv(name)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (scripts/test.sh), the tests that drive Chromium
    share one worker: their module-scoped browser and service then start once per module, not
    once per worker and again each time a worker comes back to the module, and two browsers
    never compete for the machine's two cores."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("browser"))


# Property tests check behaviour, not speed: on a busy or shared machine, generating examples
# and running them may be slow, which must not fail the suite.
settings.register_profile("forebay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("forebay")


def _available_backends() -> list[str]:
    """Backends whose module exists in this checkout (others join as they are built)."""
    import importlib.util

    names = []
    for kind in BACKENDS:
        module = {
            "sqlite": "forebay.backends.sqlite",
            "postgres": "forebay.backends.postgres",
            "redis": "forebay.backends.redis",
        }[kind]
        if importlib.util.find_spec(module) is not None:
            names.append(kind)
    return names


@pytest.fixture(params=_available_backends())
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend_kind: str, tmp_path: Path) -> str:
    """A URL for a fresh, isolated store on each backend under test."""
    return backend_url(backend_kind, tmp_path)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[Backend]:
    """An open backend on a fresh store; dropped (tables, schema or keys) afterwards."""
    async with isolated_store(url) as store:
        yield store


@pytest.fixture
async def app(url: str) -> AsyncIterator[Forebay]:
    """A Forebay app on a fresh store of each backend; the test declares its handlers."""
    forebay = Forebay(url)
    try:
        yield forebay
    finally:
        # A worker may have opened the backend without app.open(): drop whatever was created.
        if forebay._backend is not None:
            await forebay.open()
            await forebay.backend.drop_everything()
        await forebay.close()
