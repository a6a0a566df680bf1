"""Hub commits of a real dataset folder, at the ``HfApi`` seam (the Hub is not reachable here).

The API object below stands in for ``huggingface_hub.HfApi``'s two methods and keeps the
commits it was given; the errors it raises are huggingface_hub's own, with real HTTP
responses. Time is a clock the test owns: waiting advances it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import HfHubHTTPError

from forebay.sinks.dataset import DatasetSink
from forebay.sinks.hub import HubSync, retry_after_s
from forebay.testing import until  # every 1 ms: the commit loop's threads need the GIL

TABLES = {"items": [("change_id", "string"), ("n", "int64")]}


@dataclass
class Commit:
    oid: str


@dataclass
class RepoInfo:
    sha: str


@dataclass
class HubRepo:
    """The commits a dataset repository received, and failures to answer with first."""

    head: str = "c0"
    commits: list[tuple[str | None, list[str]]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    calls: int = 0

    def repo_info(
        self, repo_id: str, *, repo_type: str | None = None, revision: str | None = None
    ) -> Any:
        assert repo_type == "dataset"
        return RepoInfo(self.head)

    def create_commit(
        self,
        repo_id: str,
        operations: Iterable[Any],
        *,
        commit_message: str,
        repo_type: str | None = None,
        revision: str | None = None,
        parent_commit: str | None = None,
    ) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        if parent_commit != self.head:
            raise http_error(412, {}, "parent commit is not the head")
        ops = list(operations)
        assert all(isinstance(op, CommitOperationAdd) for op in ops)
        self.commits.append((parent_commit, [op.path_in_repo for op in ops]))
        self.head = f"c{len(self.commits)}"
        return Commit(self.head)


def http_error(status: int, headers: dict[str, str], message: str) -> HfHubHTTPError:
    request = httpx.Request("POST", "https://hub.test/api/datasets/me/data/commit/main")
    response = httpx.Response(status, headers=headers, request=request)
    return HfHubHTTPError(message, response=response)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.waits: list[float] = []
        self.hold: asyncio.Event | None = None
        """When set up, a wait lasts until the test sets it (the test decides when time passes)."""

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.hold is not None:
            await self.hold.wait()
        self.now += seconds
        await asyncio.sleep(0)


def hub(repo: HubRepo, clock: Clock, **options: Any) -> HubSync:
    return HubSync("me/data", api=repo, clock=clock, sleep=clock.sleep, **options)


async def test_a_commit_holds_every_new_shard_and_the_card(tmp_path: Path) -> None:
    repo, clock = HubRepo(), Clock()
    sync = hub(repo, clock)
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    sync.attach(tmp_path)
    await sink.write({"items": [{"change_id": "a", "n": 1}]})
    await sink.write({"items": [{"change_id": "b", "n": 2}]})
    assert await sync.sync_once() == "c1"
    ((parent, files),) = repo.commits
    assert parent == "c0"
    assert files[0] == "README.md" and len(files) == 3
    assert all(f.startswith("data/items/train-") for f in files[1:])
    assert await sync.sync_once() is None  # nothing new: no commit
    await sink.close()


async def test_the_rate_is_bounded_and_state_survives_a_restart(tmp_path: Path) -> None:
    repo, clock = HubRepo(), Clock()
    clock.hold = asyncio.Event()  # time passes only when the test says so
    sync = hub(repo, clock)  # default: at most one commit per 120 s
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0, hub=sync)
    await sink.write({"items": [{"change_id": "a", "n": 1}]})
    await until(lambda: len(repo.commits) == 1, interval_s=0.001)  # the first commit goes at once
    for n in range(5):  # a burst of shards right after it
        await sink.write({"items": [{"change_id": f"x{n}", "n": n}]})
    await until(lambda: bool(clock.waits), interval_s=0.001)
    assert clock.waits == [pytest.approx(120.0)]  # the loop waits out the interval...
    assert len(repo.commits) == 1
    clock.hold.set()  # ...two minutes pass
    await until(lambda: not sync.pending_files(), interval_s=0.001)
    assert len(repo.commits) == 2  # one commit for the whole burst
    assert len([f for f in repo.commits[1][1] if f.endswith(".parquet")]) >= 5
    await sink.close()

    # A new process: what was committed is not committed again; the head is remembered.
    again = hub(repo, clock)
    again.attach(tmp_path)
    assert again.pending_files() == []
    restarted = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await restarted.write({"items": [{"change_id": "late", "n": 9}]})
    assert len(again.pending_files()) == 1
    head = repo.head
    assert await again.sync_once() == repo.head
    assert repo.commits[-1][0] == head
    await restarted.close()


async def test_a_429_waits_as_long_as_the_hub_says(tmp_path: Path) -> None:
    repo, clock = HubRepo(), Clock()
    repo.failures = [
        http_error(429, {"Retry-After": "37"}, "slow down"),
        http_error(429, {"RateLimit": '"api";r=0;t=55'}, "slow down"),
    ]
    sync = hub(repo, clock)
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0, hub=sync)
    await sink.write({"items": [{"change_id": "a", "n": 1}]})
    await until(lambda: len(repo.commits) == 1, interval_s=0.001)
    assert clock.waits[:2] == [38.0, 56.0]  # what the headers said, plus a second
    await sink.close()


async def test_a_concurrent_commit_is_detected_and_the_head_read_again(tmp_path: Path) -> None:
    repo, clock = HubRepo(), Clock()
    sync = hub(repo, clock)
    sync.attach(tmp_path)
    sink = DatasetSink(tmp_path, tables=TABLES, flush_interval_s=0)
    await sink.write({"items": [{"change_id": "a", "n": 1}]})
    await sync.sync_once()
    repo.head = "someone-else"  # another writer committed to the repository meanwhile
    await sink.write({"items": [{"change_id": "b", "n": 2}]})
    sync.start(tmp_path)
    await until(lambda: len(repo.commits) == 2, interval_s=0.001)
    assert repo.commits[1][0] == "someone-else"
    await sync.stop()
    await sink.close()


def test_retry_after_headers() -> None:
    assert retry_after_s({"retry-after": "12"}) == 12
    assert retry_after_s({"RateLimit": '"api";r=0;t=30'}) == 30
    assert retry_after_s({"X-RateLimit-Reset": "7"}) == 7
    assert retry_after_s({}) is None
