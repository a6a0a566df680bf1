"""Helpers for testing code that uses forebay: isolated stores, waiting without sleeping, outcomes.

forebay's own test suite uses these, and so can yours (they need no particular test runner):

* :func:`isolated_url` / :func:`isolated_store`: a fresh store per test on any backend — a new
  SQLite file, a PostgreSQL schema or a Redis key prefix of its own — dropped afterwards;
* :func:`drain`: run an app's worker until no job is due and none is running, then return (a
  test that drains needs no sleep);
* :class:`Settled`: an observer that records every outcome and wakes whoever waits for one;
* :func:`until` / :func:`wait_until`: re-check a condition (on the store, over HTTP, in a
  subprocess's output) until it holds, failing after a bound — for what has no event to wait on.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from forebay.app import Forebay
from forebay.backends import Backend, backend_from_url
from forebay.errors import ConfigError
from forebay.job import Job
from forebay.outcome import JobOutcome
from forebay.worker import Worker, WorkerSettings

__all__ = ["Settled", "drain", "isolated_store", "isolated_url", "until", "wait_until"]

Predicate = Callable[[], "bool | Awaitable[bool]"]


def isolated_url(url: str, folder: str | Path | None = None) -> str:
    """``url`` narrowed to a store of its own: for SQLite a new file in ``folder`` (required);
    for PostgreSQL a new schema (``?schema=``); for Redis a new key prefix (``?prefix=``)."""
    token = secrets.token_hex(5)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if folder is None:
            raise ConfigError("an isolated SQLite store needs a folder for its file")
        return f"sqlite:///{Path(folder) / f'forebay-{token}.db'}"
    query = dict(parse_qsl(parts.query))
    if parts.scheme.startswith("postgres"):
        query["schema"] = f"forebay_test_{token}"
    elif parts.scheme.startswith("redis"):
        query["prefix"] = f"forebay-test-{token}"
    else:
        raise ConfigError(f"no backend for the URL scheme {parts.scheme!r}")
    return urlunsplit(parts._replace(query=urlencode(query)))


@asynccontextmanager
async def isolated_store(url: str) -> AsyncIterator[Backend]:
    """An open backend on ``url`` (make it with :func:`isolated_url`); everything it created
    (schema, keys) is dropped on the way out."""
    store = backend_from_url(url)
    await store.open()
    try:
        yield store
    finally:
        await store.drop_everything()
        await store.close()


async def drain(app: Forebay, queues: Iterable[str] | None = None) -> Worker:
    """Run ``app``'s worker until no job is due and none is running; return it (its
    ``processed`` counts the outcomes it recorded). Signals are left to the caller."""
    return await app.run_worker(queues, burst=True, settings=WorkerSettings(handle_signals=False))


class Settled:
    """An observer (``Forebay(observers=[...])``) that records outcomes and wakes waiters."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[int, JobOutcome]] = []
        self._changed = asyncio.Event()

    def enqueued(self, jobs: Sequence[Job]) -> None:
        pass

    def settled(self, job: Job, outcome: JobOutcome, duration_s: float) -> None:
        self.outcomes.append((job.id, outcome))
        self._changed.set()

    def count(self, outcome: JobOutcome) -> int:
        """How many distinct jobs have had ``outcome`` (at least once)."""
        return len({job_id for job_id, o in self.outcomes if o == outcome})

    async def until(self, outcome: JobOutcome, n: int, timeout_s: float = 30.0) -> None:
        """Wait until ``n`` distinct jobs have had ``outcome``."""
        async with asyncio.timeout(timeout_s):
            while self.count(outcome) < n:
                self._changed.clear()
                await self._changed.wait()

    async def outcome_of(self, job_id: int, timeout_s: float = 10.0) -> JobOutcome:
        """Wait for the first outcome of job ``job_id``, and return it."""
        async with asyncio.timeout(timeout_s):
            while True:
                for seen, outcome in self.outcomes:
                    if seen == job_id:
                        return outcome
                self._changed.clear()
                await self._changed.wait()


async def until(
    predicate: Predicate,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.01,
    what: str = "the condition",
) -> None:
    """Re-check ``predicate`` (plain or async) every ``interval_s`` until it holds; raise
    AssertionError after ``timeout_s``. Between checks the event loop runs other tasks."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.02,
    what: str = "the condition",
    process: subprocess.Popen[bytes] | None = None,
    context: Callable[[], str] | None = None,
) -> None:
    """The blocking :func:`until`, for tests that drive subprocesses: it also fails at once
    when ``process`` exits, and adds ``context()`` (e.g. the end of its log) to the message."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        problem = None
        if process is not None and process.poll() is not None:
            problem = f"the process exited ({process.returncode}) while waiting for {what}"
        elif time.monotonic() > deadline:
            problem = f"timed out after {timeout_s:g}s waiting for {what}"
        if problem is not None:
            raise AssertionError(problem + ("" if context is None else ":\n" + context()))
        time.sleep(interval_s)
