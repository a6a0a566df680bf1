"""Commit a local dataset folder to a Hugging Face Hub dataset repository, at a bounded rate.

The local folder (:class:`~forebay.sinks.dataset.DatasetSink`) is where rows become durable;
the Hub gets them afterwards, in commits that gather every shard written since the last one:

* at most one commit per ``commit_interval_s`` (default 120 s), however fast shards appear;
* each commit names the commit it builds on (``parent_commit``), so a concurrent writer to the
  repository is detected instead of overwritten; on a conflict the head is read again;
* a ``429 Too Many Requests`` is waited out for as long as the Hub says — ``Retry-After``, or
  the reset time of the ``RateLimit`` header — and other failures back off exponentially;
* what has been committed (files and the head commit) is kept in ``.forebay/hub.json`` in the
  folder, so a restart resumes where it stopped and commits nothing twice.

The seam is :class:`HubApi`, the two methods of ``huggingface_hub.HfApi`` used here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from forebay.errors import ConfigError, MissingExtra
from forebay.lifecycle import BackgroundTask

__all__ = ["HubApi", "HubSync", "retry_after_s"]

log = logging.getLogger("forebay.sinks.hub")

STATE_FILE = ".forebay/hub.json"


class HubApi(Protocol):
    """What :class:`HubSync` needs of ``huggingface_hub.HfApi``."""

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
        """Create one commit; the answer has the new commit's ``oid``."""

    def repo_info(
        self, repo_id: str, *, repo_type: str | None = None, revision: str | None = None
    ) -> Any:
        """The repository; its ``sha`` is the head commit of ``revision``."""


@dataclass(slots=True)
class _State:
    head: str | None = None
    committed: dict[str, int] = field(default_factory=dict)  # path -> size committed
    last_commit_at: float | None = None  # wall-clock seconds


class HubSync:
    """Commits new files of a dataset folder to ``repo_id``. See the module docstring.

    ``clock`` and ``sleep`` measure and wait (wall-clock seconds); tests give their own.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        api: HubApi | None = None,
        token: str | None = None,
        revision: str = "main",
        commit_interval_s: float = 120.0,
        max_files_per_commit: int = 500,
        max_backoff_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if commit_interval_s < 0 or max_files_per_commit < 1:
            raise ConfigError("commit_interval_s must be >= 0 and max_files_per_commit >= 1")
        self.repo_id = repo_id
        self.revision = revision
        self.commit_interval_s = commit_interval_s
        self.max_files_per_commit = max_files_per_commit
        self.max_backoff_s = max_backoff_s
        self._api = api
        self._token = token
        self._clock = clock
        self._sleep = sleep
        self._folder: Path | None = None
        self._state = _State()
        self._wake = asyncio.Event()
        self._task = BackgroundTask("forebay-hub-sync", self._loop)
        self.commits = 0

    @property
    def api(self) -> HubApi:
        if self._api is None:
            try:
                from huggingface_hub import HfApi
            except ImportError:
                raise MissingExtra("hf", "huggingface_hub") from None
            self._api = HfApi(token=self._token)
        return self._api

    # -- lifecycle (a named background loop, idempotent start/stop) --------------------------
    def start(self, folder: Path) -> None:
        """Start committing ``folder`` in the background. Idempotent."""
        self.attach(folder)
        if not self._task.running:
            self._wake.set()  # files left from a previous run are committed too
            self._task.start()

    def attach(self, folder: Path) -> None:
        if self._folder is None:
            self._folder = folder
            self._state = self._load_state()

    def notify(self) -> None:
        """New files were written: commit them when the rate allows."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop; uncommitted files are committed after the next start."""
        await self._task.stop()

    async def _loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await asyncio.to_thread(self.pending_files):
                continue
            await self._wait_for_turn()
            while True:
                try:
                    await self._commit_to_completion()
                except Exception as exc:
                    failures += 1
                    delay = self._delay_after(exc, failures)
                    log.warning(
                        "Hub commit to %s failed (%s); next try in %.0fs", self.repo_id, exc, delay
                    )
                    await self._sleep(delay)
                    continue
                failures = 0
                if not await asyncio.to_thread(self.pending_files):
                    break
                await self._wait_for_turn()  # more than one commit's worth: keep the rate

    async def _commit_to_completion(self) -> None:
        # A commit the Hub accepted must be recorded, or the next start would commit it again
        # on a stale parent: stop() waits for a commit in flight instead of abandoning it.
        commit = asyncio.ensure_future(self.sync_once())
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await asyncio.gather(commit, return_exceptions=True)
            raise

    async def _wait_for_turn(self) -> None:
        last = self._state.last_commit_at
        if last is not None:
            wait_s = last + self.commit_interval_s - self._clock()
            if wait_s > 0:
                await self._sleep(wait_s)

    def _delay_after(self, exc: BaseException, failures: int) -> float:
        status = _status(exc)
        if status == 429:
            told = retry_after_s(_headers(exc))
            if told is not None:
                return min(told + 1.0, self.max_backoff_s)
        if status in (409, 412):
            self._state.head = None  # someone else committed: read the head again, at once
            if failures <= 3:
                return 0.0
        backoff = min(self.max_backoff_s, 5.0 * 2 ** min(failures - 1, 12))
        return random.uniform(backoff / 2, backoff)

    # -- one commit ----------------------------------------------------------------------------
    def pending_files(self) -> list[str]:
        """Files of the folder not committed yet (or changed since), relative to it."""
        folder = self._require_folder()
        found = []
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if not path.is_file() or any(p.startswith(".") for p in relative.split("/")):
                continue
            if self._state.committed.get(relative) != path.stat().st_size:
                found.append(relative)
        return found

    async def sync_once(self) -> str | None:
        """Commit up to ``max_files_per_commit`` pending files now; return the new head."""
        files = (await asyncio.to_thread(self.pending_files))[: self.max_files_per_commit]
        if not files:
            return None
        folder = self._require_folder()
        try:
            from huggingface_hub import CommitOperationAdd
        except ImportError:
            raise MissingExtra("hf", "huggingface_hub") from None
        if self._state.head is None:
            info = await asyncio.to_thread(
                self.api.repo_info, self.repo_id, repo_type="dataset", revision=self.revision
            )
            self._state.head = getattr(info, "sha", None)
        sizes = {f: (folder / f).stat().st_size for f in files}
        operations = [CommitOperationAdd(f, str(folder / f)) for f in files]
        shards = sum(1 for f in files if f.endswith(".parquet"))
        result = await asyncio.to_thread(
            self.api.create_commit,
            self.repo_id,
            operations,
            commit_message=f"forebay: add {shards} shard(s)",
            repo_type="dataset",
            revision=self.revision,
            parent_commit=self._state.head,
        )
        self._state.head = getattr(result, "oid", None)
        self._state.committed.update(sizes)
        self._state.last_commit_at = self._clock()
        self._save_state()
        self.commits += 1
        log.info("committed %d file(s) to %s (%s)", len(files), self.repo_id, self._state.head)
        return self._state.head

    # -- state ---------------------------------------------------------------------------------
    def _require_folder(self) -> Path:
        if self._folder is None:
            raise ConfigError("HubSync has no folder: it is started by its DatasetSink")
        return self._folder

    def _load_state(self) -> _State:
        path = self._require_folder() / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError) as exc:
            log.warning(
                "ignoring unreadable %s (%s): everything will be committed again", path, exc
            )
            return _State()
        if raw.get("repo_id") != self.repo_id or raw.get("revision") != self.revision:
            return _State()
        return _State(raw.get("head"), dict(raw.get("committed", {})), raw.get("last_commit_at"))

    def _save_state(self) -> None:
        path = self._require_folder() / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "head": self._state.head,
            "committed": self._state.committed,
            "last_commit_at": self._state.last_commit_at,
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
        os.replace(temporary, path)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``Retry-After`` or the ``RateLimit`` header (``t=``), if given."""
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    match = re.search(r"(?:^|;)\s*t=(\d+)", lower.get("ratelimit", ""))
    if match:
        return float(match[1])
    reset = lower.get("x-ratelimit-reset", "").strip()
    if reset.isdigit():
        seconds = float(reset)
        # Either seconds to wait, or an epoch time of the reset.
        return max(0.0, seconds - time.time()) if seconds > 1e9 else seconds
    return None


def _response(exc: BaseException) -> Any:
    return getattr(exc, "response", None)


def _status(exc: BaseException) -> int | None:
    status = getattr(_response(exc), "status_code", None)
    return status if isinstance(status, int) else None


def _headers(exc: BaseException) -> Mapping[str, str]:
    headers = getattr(_response(exc), "headers", None)
    return headers if isinstance(headers, Mapping) else {}
