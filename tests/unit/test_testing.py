"""forebay.testing: the helpers users' tests (and forebay's own) rely on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forebay import ConfigError
from forebay.testing import isolated_url, until, wait_until


def test_isolated_urls_name_a_store_of_their_own(tmp_path: Path) -> None:
    a, b = isolated_url("sqlite:///x.db", tmp_path), isolated_url("sqlite:///x.db", tmp_path)
    assert a != b and a.startswith(f"sqlite:///{tmp_path}/")
    pg = isolated_url("postgresql://u@h:5432/db?pool_size=3")
    assert pg.startswith("postgresql://u@h:5432/db?pool_size=3&schema=forebay_test_")
    assert "prefix=forebay-test-" in isolated_url("redis://127.0.0.1:6379/0")
    assert isolated_url("rediss://h:6379") != isolated_url("rediss://h:6379")
    with pytest.raises(ConfigError):
        isolated_url("sqlite:///x.db")  # a file needs a folder
    with pytest.raises(ConfigError):
        isolated_url("mysql://h/db")


async def test_until_takes_plain_and_async_predicates_and_fails_after_its_bound() -> None:
    calls = []

    async def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await until(third_time, interval_s=0)
    assert len(calls) == 3
    with pytest.raises(AssertionError, match="waiting for the moon"):
        await until(lambda: False, timeout_s=0.05, what="the moon")


def test_wait_until_fails_at_once_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(AssertionError, match=r"exited \(3\).*\n.*the log"):
        wait_until(lambda: False, timeout_s=60, process=proc, context=lambda: "the log")
