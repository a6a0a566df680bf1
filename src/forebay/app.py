"""The application object: declares queues and handlers, enqueues, inspects, runs workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from forebay.backends import Backend, backend_from_url
from forebay.backoff import Backoff
from forebay.errors import ConfigError, JobNotFound
from forebay.job import Job, JobFilter, NewJob, QueueCounts
from forebay.observer import Observer, notify_enqueued
from forebay.queue_config import ExhaustedHook, QueueConfig
from forebay.settings import resolve_url
from forebay.sources import KeyFunction, Source, SourceAuth, SplitFunction
from forebay.worker import Worker, WorkerSettings

__all__ = ["Forebay"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Forebay:
    """A forebay application: queues with their handlers, bound to one backend.

    ``Forebay()`` uses ``FOREBAY_URL`` or, without it, ``sqlite:///./forebay.db``. The backend
    is opened on first use; ``async with app:`` (or :meth:`close`) releases it.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Backend | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        if backend is not None and url is not None:
            raise ConfigError("give url or backend, not both")
        self.url = resolve_url(url)
        self._backend = backend
        self.observers: list[Observer] = list(observers)
        """Told about every enqueue and outcome (metrics, logs): see :mod:`forebay.observer`."""
        self.queues: dict[str, QueueConfig] = {}
        self.sources: dict[str, Source] = {}
        self._open_lock: asyncio.Lock | None = None
        self._opened = False
        self._sync: _SyncRunner | None = None

    def __repr__(self) -> str:
        return f"Forebay({self.url!r}, queues={sorted(self.queues)})"

    # -- declaring ----------------------------------------------------------------------
    def handler(
        self,
        queue: str,
        *,
        max_attempts: int = 5,
        max_deliveries: int | None = None,
        max_defers: int = 100,
        timeout_s: float = 300.0,
        lease_s: float = 30.0,
        concurrency: int = 8,
        batch_size: int | None = None,
        backoff: Backoff | None = None,
        max_depth: int | None = None,
        on_exhausted: ExhaustedHook | None = None,
        completed_retention: timedelta | None = None,
        dead_retention: timedelta | None = None,
        cancelled_retention: timedelta | None = None,
    ) -> Callable[[F], F]:
        """Declare ``queue`` and the function that handles its jobs (see :class:`QueueConfig`)."""

        def register(fn: F) -> F:
            if queue in self.queues and self.queues[queue].handler is not None:
                raise ConfigError(f"queue {queue!r} already has a handler")
            self.queues[queue] = QueueConfig(
                name=queue,
                handler=fn,
                max_attempts=max_attempts,
                max_deliveries=max_deliveries,
                max_defers=max_defers,
                timeout_s=timeout_s,
                lease_s=lease_s,
                concurrency=concurrency,
                batch_size=batch_size,
                backoff=backoff or Backoff(),
                max_depth=max_depth,
                on_exhausted=on_exhausted,
                completed_retention=completed_retention,
                dead_retention=dead_retention,
                cancelled_retention=cancelled_retention,
            )
            return fn

        return register

    def queue(self, name: str, *, max_depth: int | None = None) -> None:
        """Declare a queue without a handler here (a producer-only process), e.g. its max_depth."""
        existing = self.queues.get(name)
        self.queues[name] = (
            replace(existing, max_depth=max_depth)
            if existing
            else QueueConfig(name, max_depth=max_depth)
        )

    def source(
        self,
        name: str,
        *,
        queue: str,
        auth: SourceAuth | None = None,
        key: KeyFunction | None = None,
        split: SplitFunction | None = None,
        max_body_bytes: int = 1_048_576,
    ) -> Source:
        """Declare the webhook ``POST /v1/sources/{name}``, feeding ``queue`` (see
        :mod:`forebay.sources`); declare the queue's handler as usual."""
        if name in self.sources:
            raise ConfigError(f"source {name!r} is already declared")
        self.sources[name] = Source(name, queue, auth, key, split, max_body_bytes)
        return self.sources[name]

    # -- lifecycle ----------------------------------------------------------------------
    def use_url(self, url: str) -> None:
        """Store jobs at ``url`` instead of the URL this app was made with (the CLI's ``--url``
        does this to the app it imports).

        Raises ConfigError when the app already has its backend object (given as
        ``Forebay(backend=...)``, or built by a first use): that backend stays.
        """
        if url == self.url:
            return
        if self._backend is not None:
            raise ConfigError(
                f"this app already has its backend object ({type(self._backend).__name__}), "
                f"so it cannot move to {url!r}"
            )
        self.url = url

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = backend_from_url(self.url)
        return self._backend

    async def open(self) -> Backend:
        """Open the backend (connect, migrate) if not yet open; return it."""
        if self._opened:  # the hot path: every enqueue asks
            return self.backend
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.backend.open()
                self._opened = True
        return self.backend

    async def close(self) -> None:
        self._opened = False
        if self._backend is not None:  # also when a worker opened it (Worker.run opens it)
            await self._backend.close()

    async def __aenter__(self) -> Forebay:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- enqueue ------------------------------------------------------------------------
    async def enqueue(
        self,
        queue: str,
        payload: object,
        *,
        key: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        run_id: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        connection: object | None = None,
    ) -> Job:
        """Store one job durably and return it (``job.created`` is False for a known key).

        ``max_attempts``, ``timeout_s``: this job's own limits (1–1000 attempts; seconds, at
        most a week), in place of its queue's. ``connection``: on PostgreSQL, your own
        connection inside an open transaction; the job then exists if and only if your
        transaction commits.
        """
        new = NewJob.create(
            queue,
            payload,
            key=key,
            priority=priority,
            run_at=run_at,
            delay=delay,
            run_id=run_id,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
        )
        return (await self.enqueue_many([new], connection=connection))[0]

    async def enqueue_many(
        self, jobs: Iterable[NewJob], *, connection: object | None = None
    ) -> list[Job]:
        """Store many jobs in one transaction (build them with :meth:`NewJob.create`)."""
        batch = list(jobs)
        backend = await self.open()
        stored = await backend.enqueue(
            batch, max_depth=self._depth_limits(batch), connection=connection
        )
        if self.observers:
            notify_enqueued(self.observers, stored)
        return stored

    def _depth_limits(self, jobs: Sequence[NewJob]) -> dict[str, int] | None:
        limits = {
            j.queue: cfg.max_depth
            for j in jobs
            if (cfg := self.queues.get(j.queue)) is not None and cfg.max_depth is not None
        }
        return limits or None

    def enqueue_sync(self, queue: str, payload: object, **options: Any) -> Job:
        """:meth:`enqueue` for synchronous code (scripts, WSGI views). Thread-safe."""
        return self._run_sync(lambda: self.enqueue(queue, payload, **options))

    def _run_sync(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._sync is None:
            self._sync = _SyncRunner()
        return self._sync.run(make())

    def close_sync(self) -> None:
        """Close the backend used by the ``*_sync`` methods."""
        if self._sync is not None:
            self._sync.run(self.close())
            self._sync.stop()
            self._sync = None

    # -- inspecting and operating -------------------------------------------------------
    async def get_job(self, job_id: int) -> Job:
        job = await (await self.open()).get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list_jobs(
        self, where: JobFilter | None = None, *, limit: int = 100, before_id: int | None = None
    ) -> list[Job]:
        return await (await self.open()).list_jobs(
            where or JobFilter(), limit=limit, before_id=before_id
        )

    async def counts(self) -> list[QueueCounts]:
        return await (await self.open()).counts()

    async def cancel(self, *job_ids: int) -> list[int]:
        """Cancel queued jobs; return the ids that were cancelled (running ones are not)."""
        return await (await self.open()).cancel(job_ids)

    async def replay(self, where: JobFilter | None = None, *, dry_run: bool = False) -> int:
        """Put dead jobs back to queued with fresh counters; return how many."""
        return await (await self.open()).replay(where or JobFilter(), dry_run=dry_run)

    async def purge(self, where: JobFilter | None = None, *, dry_run: bool = False) -> int:
        """Delete dead jobs; return how many."""
        return await (await self.open()).purge(where or JobFilter(), dry_run=dry_run)

    # -- working ------------------------------------------------------------------------
    def worker(
        self, queues: Iterable[str] | None = None, settings: WorkerSettings | None = None
    ) -> Worker:
        """A worker for ``queues`` (default: every queue with a handler)."""
        handled = {n: q for n, q in self.queues.items() if q.handler is not None}
        names = list(queues) if queues is not None else list(handled)
        unknown = [n for n in names if n not in handled]
        if unknown:
            raise ConfigError(
                f"no handler for queue(s) {', '.join(unknown)}; "
                f"this app handles: {', '.join(sorted(handled)) or 'nothing'}"
            )
        if not names:
            raise ConfigError("this app declares no handler: decorate a function with @app.handler")
        return Worker(self.backend, [handled[n] for n in names], settings, observers=self.observers)

    async def run_worker(
        self,
        queues: Iterable[str] | None = None,
        *,
        burst: bool = False,
        settings: WorkerSettings | None = None,
    ) -> Worker:
        """Run a worker until stopped (or, with ``burst``, until no job is due); return it."""
        settings = settings or WorkerSettings()
        if burst:
            settings = replace(settings, burst=True)
        worker = self.worker(queues, settings)
        await self.open()
        await worker.run()
        return worker


class _SyncRunner:
    """An event loop on a daemon thread, for the ``*_sync`` methods."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="forebay-sync", daemon=True
        )
        self._thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
