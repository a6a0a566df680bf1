"""The application object: declares queues and handlers, enqueues, inspects, runs workers."""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from forebay.backends import Backend, backend_from_url
from forebay.backoff import Backoff
from forebay.errors import (
    ConfigError,
    InvalidPayload,
    JobNotFound,
    JobStateConflict,
    RunNotFound,
    WaitTimeout,
)
from forebay.fleet import QueueTotals, Throughput, WorkerInfo
from forebay.flow import FlowLimits, KeySpec, Rate
from forebay.job import (
    DeadCursor,
    Job,
    JobFilter,
    JobState,
    NewJob,
    QueueCounts,
    utcnow,
    validate_key,
    validate_queue_name,
)
from forebay.observer import Observer, notify_enqueued
from forebay.payloads import PayloadModel, validate_jobs
from forebay.queue_config import ExhaustedHook, FailureHook, QueueConfig, SuccessHook
from forebay.queue_settings import KEEP, Keep, QueueSettings
from forebay.runs import WEBHOOK_QUEUE, NewRun, Run, RunState
from forebay.schedules import Cron, Every, Schedule
from forebay.settings import check_quotas, resolve_url, tenant_quotas_from_env
from forebay.sources import KeyFunction, Source, SourceAuth, SplitFunction
from forebay.tracing import Tracing
from forebay.webhooks import WebhookDelivery, WebhookSettings, webhook_queue
from forebay.worker import Worker, WorkerSettings

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from forebay.execution.command import Command

__all__ = ["Forebay"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Forebay:
    """A forebay application: queues with their handlers, bound to one backend.

    ``Forebay()`` uses ``FOREBAY_URL`` or, without it, ``sqlite:///./forebay.db``. The backend
    is opened on first use; ``async with app:`` (or :meth:`close`) releases it.

    ``webhooks``: how webhook deliveries are made and signed (default: the ``FOREBAY_WEBHOOK_*``
    variables, read at the first delivery); see docs/webhooks.md.

    ``tenant_quotas``: the most unfinished jobs (waiting, queued, running, in every queue) each
    tenant may have, e.g. ``{"acme": 1000, "*": 500}`` (``"*"``: every tenant without its own
    entry); an enqueue that would pass it stores nothing and raises TenantQuotaFull. Default:
    ``FOREBAY_TENANT_QUOTAS`` (``acme=1000,*=500``), else none. See docs/flow-control.md.

    ``tracer_provider``: the OpenTelemetry tracer provider of this app's spans (enqueues and
    handler runs); default: the global one, as the SDK or ``opentelemetry-instrument`` sets it
    up from the ``OTEL_*`` variables. See docs/tracing.md.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Backend | None = None,
        observers: Sequence[Observer] = (),
        webhooks: WebhookSettings | None = None,
        tenant_quotas: Mapping[str, int] | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if backend is not None and url is not None:
            raise ConfigError("give url or backend, not both")
        self.url = resolve_url(url)
        self.tenant_quotas: Mapping[str, int] = MappingProxyType(
            tenant_quotas_from_env() if tenant_quotas is None else check_quotas(tenant_quotas)
        )
        """Each tenant's cap on unfinished jobs (``"*"``: every tenant without its own entry);
        an enqueue past it raises TenantQuotaFull."""
        self._backend = backend
        self.observers: list[Observer] = list(observers)
        """Told about every enqueue and outcome (metrics, logs): see :mod:`forebay.observer`."""
        self.queues: dict[str, QueueConfig] = {}
        self.sources: dict[str, Source] = {}
        self.schedules: dict[str, Schedule] = {}
        """Declared by :meth:`schedule`, by name; saved to the store when a worker starts."""
        self._payload_models: dict[str, PayloadModel] = {}
        self._open_lock: asyncio.Lock | None = None
        self._opened = False
        self._unsaved: set[str] = set()  # queues whose declared max_depth is not stored yet
        self._keyed: dict[str, QueueConfig] = {}  # queues that declare a flow key
        self._sync: _SyncRunner | None = None
        self.tracing = Tracing(tracer_provider)
        """How this app traces its enqueues and the runs of its workers (docs/tracing.md)."""
        self._declare_builtin_queues(webhooks)

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
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
        hook_timeout_s: float = 60.0,
        schedule: Every | Cron | None = None,
        max_result_bytes: int = 1_048_576,
        payload: PayloadModel | None = None,
        completed_retention: timedelta | None = None,
        dead_retention: timedelta | None = None,
        cancelled_retention: timedelta | None = None,
        rate_limit: Rate | str | None = None,
        rate_limit_key: KeySpec | None = None,
        rate_limit_per_key: Rate | str | None = None,
        global_concurrency: int | None = None,
        concurrency_key: KeySpec | None = None,
        concurrency_per_key: int | None = None,
        fair_key: KeySpec | None = None,
        priority_aging: timedelta | float | None = None,
    ) -> Callable[[F], F]:
        """Declare ``queue`` and the function that handles its jobs (see :class:`QueueConfig`).

        ``schedule``: also enqueue a job (payload ``null``) on this queue at every tick, e.g.
        ``Every(timedelta(seconds=30))`` or ``Cron("0 3 * * *", tz="Europe/Berlin")``: a
        schedule named after the queue (see :meth:`schedule` for the other options).

        ``payload``: a pydantic model; every enqueue of the queue is validated against it and
        stored as its JSON, and the handler gets ``job.payload`` as an instance of it (see
        :mod:`forebay.payloads`).

        ``on_success(job, result)``, ``on_failure(job, error)`` (every failed attempt, retried
        or dead), ``on_exhausted(job, error)`` (dead): async hooks run once the outcome is
        recorded, in tasks of their own, each for at most ``hook_timeout_s`` (docs/webhooks.md).

        Flow limits, held by the job store across every worker (docs/flow-control.md):
        ``rate_limit="50/s"`` (jobs started per period, the whole queue), ``rate_limit_key=``
        with ``rate_limit_per_key="10/m"`` (per key), ``global_concurrency=N`` (running at once,
        every worker together), ``concurrency_key=`` with ``concurrency_per_key=N``,
        ``fair_key=`` (keys take turns), ``priority_aging=`` (seconds, or a timedelta, per
        step of effective priority). A key is a path (``"payload.user_id"``, ``"tenant"``) or
        a callable given the :class:`~forebay.job.NewJob`, worked out when a job is enqueued.
        A worker stores the limits its app declares when it starts.
        """
        planned = None
        if isinstance(schedule, Every):
            planned = Schedule.create(queue, every=schedule.interval)
        elif isinstance(schedule, Cron):
            planned = Schedule.create(queue, cron=schedule.expression, tz=schedule.tz)

        def register(fn: F) -> F:
            if queue in self.queues and self.queues[queue].handler is not None:
                raise ConfigError(f"queue {queue!r} already has a handler")
            if planned is not None:
                self._refuse_taken(planned)
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
                on_success=on_success,
                on_failure=on_failure,
                hook_timeout_s=hook_timeout_s,
                max_result_bytes=max_result_bytes,
                payload_model=payload,
                completed_retention=completed_retention,
                dead_retention=dead_retention,
                cancelled_retention=cancelled_retention,
                rate_limit=rate_limit,
                rate_limit_key=rate_limit_key,
                rate_limit_per_key=rate_limit_per_key,
                global_concurrency=global_concurrency,
                concurrency_key=concurrency_key,
                concurrency_per_key=concurrency_per_key,
                fair_key=fair_key,
                priority_aging=priority_aging,
            )
            self._declared(self.queues[queue])
            if planned is not None:
                self.schedules[planned.name] = planned
            return fn

        return register

    def queue(
        self,
        name: str,
        *,
        max_depth: int | None = None,
        payload: PayloadModel | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
        on_exhausted: ExhaustedHook | None = None,
        rate_limit_key: KeySpec | None = None,
        concurrency_key: KeySpec | None = None,
        fair_key: KeySpec | None = None,
    ) -> None:
        """Declare a queue without a handler here (a producer-only process), e.g. its max_depth
        or its payload model (validated at every enqueue, as with :meth:`handler`).

        A declared ``max_depth`` is stored in the job store when the app opens it (or at its
        next enqueue, when declared later): every producer of the queue obeys it from then on,
        including those that never declared it. ``None`` leaves the stored limit as it is.

        ``on_success``, ``on_failure``, ``on_exhausted``: hooks (see :meth:`handler`) added to
        a queue declared before, e.g. by :meth:`handler`; a hook not given keeps the one the
        queue has. They run in this app's workers that handle the queue.

        ``rate_limit_key``, ``concurrency_key``, ``fair_key``: how this app works out the
        flow keys of the queue's jobs at enqueue (see :meth:`handler`), so a producer without
        the handler code stores them as its workers expect, e.g. ``fair_key="tenant"``.

        Declaring a queue again changes only what is given: its payload model, max_depth,
        hooks and keys otherwise stay as declared before.
        """
        existing = self.queues.get(name) or QueueConfig(name)
        self.queues[name] = replace(
            existing,
            max_depth=existing.max_depth if max_depth is None else max_depth,
            payload_model=existing.payload_model if payload is None else payload,
            on_success=on_success or existing.on_success,
            on_failure=on_failure or existing.on_failure,
            on_exhausted=on_exhausted or existing.on_exhausted,
            rate_limit_key=existing.rate_limit_key if rate_limit_key is None else rate_limit_key,
            concurrency_key=(
                existing.concurrency_key if concurrency_key is None else concurrency_key
            ),
            fair_key=existing.fair_key if fair_key is None else fair_key,
        )
        self._declared(self.queues[name])

    def _declared(self, config: QueueConfig) -> None:
        if config.payload_model is None:
            self._payload_models.pop(config.name, None)
        else:
            self._payload_models[config.name] = config.payload_model
        if config.max_depth is not None:
            self._unsaved.add(config.name)
        if config.keyed:
            self._keyed[config.name] = config
        else:
            self._keyed.pop(config.name, None)

    # -- the built-in queues ----------------------------------------------------------------
    def _declare_builtin_queues(self, webhooks: WebhookSettings | None) -> None:
        """The queues forebay itself handles: ``forebay.webhooks`` delivers the webhooks of
        finished jobs and runs (:mod:`forebay.webhooks`; ``webhooks``: its settings, None:
        ``FOREBAY_WEBHOOK_*`` read at the first delivery).

        Every worker of an app that handles a queue serves them too, unless it is given its
        queues by name without them (``app.worker(["docs"])``, ``forebay worker --queue
        docs``). They are kept apart from :attr:`queues`: nobody enqueues to them over HTTP.
        """
        self._webhooks = WebhookDelivery(webhooks)
        self.builtin_queues: Mapping[str, QueueConfig] = MappingProxyType(
            {WEBHOOK_QUEUE: webhook_queue(self._webhooks)}
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
        rate_limit: Rate | str | None = None,
    ) -> Source:
        """Declare the webhook ``POST /v1/sources/{name}``, feeding ``queue`` (see
        :mod:`forebay.sources`); declare the queue's handler as usual.

        ``rate_limit``: requests per period the source accepts, e.g. ``"20/s"`` (each service
        instance counts its own); past it the sender gets 429 with ``Retry-After``."""
        if name in self.sources:
            raise ConfigError(f"source {name!r} is already declared")
        try:
            limit = None if rate_limit is None else Rate.parse(rate_limit)
        except ConfigError as exc:
            raise ConfigError(f"source {name!r}: rate_limit: {exc}") from None
        self.sources[name] = Source(name, queue, auth, key, split, max_body_bytes, limit)
        return self.sources[name]

    def schedule(
        self,
        queue: str,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        payload: object = None,
        name: str | None = None,
        tz: str = "UTC",
        catch_up: int = 1,
        priority: int = 0,
    ) -> Schedule:
        """Enqueue a job on ``queue`` at every tick of a cron expression or an interval.

        ``cron``: five fields (``"*/5 * * * *"``), read on the wall clock of ``tz`` (an IANA
        name); ``every``: a timedelta of at least a second, ticking at its multiples since the
        Unix epoch. Each tick's job carries ``payload`` and the key
        ``schedule:<name>:<tick time, ISO 8601 UTC>``; ``name`` defaults to the queue's.
        After downtime, at most ``catch_up`` missed ticks are enqueued (the newest).

        Stored when a worker of this app starts (or by :meth:`save_schedules`); every worker
        process, on every host, then fires it, and each tick is enqueued once.
        """
        declared = Schedule.create(
            queue,
            cron=cron,
            every=every,
            payload=payload,
            name=name,
            tz=tz,
            catch_up=catch_up,
            priority=priority,
        )
        self._refuse_taken(declared)
        self.schedules[declared.name] = declared
        return declared

    def _refuse_taken(self, schedule: Schedule) -> None:
        if schedule.name in self.schedules:
            raise ConfigError(
                f"schedule {schedule.name!r} is already declared; give the second one a name="
            )

    # -- commands: a queue whose jobs run a program (forebay.execution.command) -----------
    def command(
        self,
        queue: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        permanent_exit_codes: Iterable[int] = (),
        max_output_bytes: int = 1_048_576,
        term_grace_s: float = 5.0,
        max_attempts: int = 5,
        max_deliveries: int | None = None,
        timeout_s: float = 300.0,
        lease_s: float = 30.0,
        concurrency: int = 8,
        backoff: Backoff | None = None,
        max_depth: int | None = None,
        on_exhausted: ExhaustedHook | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
        hook_timeout_s: float = 60.0,
        schedule: Every | Cron | None = None,
        max_result_bytes: int = 1_048_576,
        payload: PayloadModel | None = None,
        completed_retention: timedelta | None = None,
        dead_retention: timedelta | None = None,
        cancelled_retention: timedelta | None = None,
    ) -> Command:
        """Declare ``queue`` and the program each of its jobs runs: ``argv``, e.g.
        ``["python", "ingest.py"]`` (no shell; ``["sh", "-c", "..."]`` for one).

        The program reads the payload as JSON on stdin; ``FOREBAY_JOB_ID``, ``FOREBAY_ATTEMPT``
        and ``FOREBAY_QUEUE`` are in its environment (the worker's, plus ``env``); a stdout line
        ``PROGRESS: <0-100> [message]`` is the job's progress and the last stdout line that is
        JSON its result. Exit 0 completes; a status in ``permanent_exit_codes`` is dead at once;
        killed by SIGKILL (out of memory) is ``ResourceExhausted``, retried; anything else is
        retried. At ``timeout_s``, on a cancel and at shutdown its process group gets SIGTERM,
        then SIGKILL after ``term_grace_s``. Each stream's output is logged up to
        ``max_output_bytes`` per run. The other options are :meth:`handler`'s. The program runs
        from the worker's own event loop, also with handler processes. See docs/subprocess.md.
        """
        # Imported here: an app that declares no command (and every worker) loads no runner.
        from forebay.execution.command import Command, command_handler

        if isinstance(argv, str):
            raise ConfigError(
                f"argv is a list, the program first: {argv.split()!r} "
                f"(for a shell line: ['sh', '-c', {argv!r}])"
            )
        declared = Command(
            tuple(argv),
            env=dict(env or {}),
            cwd=None if cwd is None else os.fspath(cwd),
            permanent_exit_codes=frozenset(permanent_exit_codes),
            max_output_bytes=max_output_bytes,
            term_grace_s=term_grace_s,
            max_result_bytes=max_result_bytes,
        )
        self.handler(
            queue,
            max_attempts=max_attempts,
            max_deliveries=max_deliveries,
            timeout_s=timeout_s,
            lease_s=lease_s,
            concurrency=concurrency,
            backoff=backoff,
            max_depth=max_depth,
            on_exhausted=on_exhausted,
            on_success=on_success,
            on_failure=on_failure,
            hook_timeout_s=hook_timeout_s,
            schedule=schedule,
            max_result_bytes=max_result_bytes,
            payload=payload,
            completed_retention=completed_retention,
            dead_retention=dead_retention,
            cancelled_retention=cancelled_retention,
        )(command_handler(declared))
        self.queues[queue] = replace(self.queues[queue], in_process=True)
        return declared

    @property
    def payload_models(self) -> Mapping[str, PayloadModel]:
        """The payload model of each queue that declares one."""
        return MappingProxyType(self._payload_models)

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
        """Open the backend (connect, migrate) if not yet open, and store the declared
        ``max_depth`` of its queues; return it."""
        if self._opened and not self._unsaved:  # the hot path: every enqueue asks
            return self.backend
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.backend.open()
                self._opened = True
            for name in sorted(self._unsaved):
                await self.backend.set_queue(name, max_depth=self.queues[name].max_depth)
                self._unsaved.discard(name)
        return self.backend

    async def close(self) -> None:
        self._opened = False
        await self._webhooks.close()
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
        run: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        after: Sequence[int] = (),
        after_policy: str = "completed",
        webhook: str | None = None,
        tenant: str | None = None,
        rate_key: str | int | None = None,
        concurrency_key: str | int | None = None,
        fair_key: str | int | None = None,
        connection: object | None = None,
    ) -> Job:
        """Store one job durably and return it (``job.created`` is False for a known key).

        ``payload``: JSON-ready data, or a pydantic model instance (stored as its JSON). On a
        queue with a payload model it is validated first: PayloadValidationError, with the
        field errors, and nothing stored.

        ``max_attempts``, ``timeout_s``: this job's own limits (1–1000 attempts; seconds, at
        most a week), in place of its queue's.

        ``run``: the id of a run to join (:meth:`start_run`); a sealed run refuses it
        (RunSealed). ``after``: ids of jobs this one waits for (state ``waiting``) until every
        one completed; a parent that ends dead or cancelled cancels it, unless
        ``after_policy="always"`` (run once they all finished). ``webhook``: a URL that gets
        the job's final state, signed (docs/webhooks.md).

        ``tenant``: whose job this is (tokens bound to a tenant see only its jobs; its quota,
        ``tenant_quotas``, bounds its unfinished jobs). ``rate_key``, ``concurrency_key``,
        ``fair_key``: the job's flow keys, in place of the ones its queue's declaration would
        work out (docs/flow-control.md).

        ``connection``: on PostgreSQL, your own connection inside an open transaction; the job
        then exists if and only if your transaction commits.
        """
        new = NewJob.create(
            queue,
            payload,
            key=key,
            priority=priority,
            run_at=run_at,
            delay=delay,
            run=run,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            after=after,
            after_policy=after_policy,
            webhook=webhook,
            tenant=tenant,
            rate_key=rate_key,
            concurrency_key=concurrency_key,
            fair_key=fair_key,
        )
        return (await self.enqueue_many([new], connection=connection))[0]

    async def enqueue_many(
        self, jobs: Iterable[NewJob], *, connection: object | None = None
    ) -> list[Job]:
        """Store many jobs in one transaction (build them with :meth:`NewJob.create`).

        A payload refused by its queue's payload model refuses the whole batch
        (PayloadValidationError naming the job's position); nothing is stored.

        A job of a queue this app declares with flow keys gets each key it does not carry
        worked out here (:meth:`QueueConfig.with_flow_keys`), whoever builds it: the HTTP
        service, the CLI, a source, ``job.enqueue``. A tenant over its quota
        (``tenant_quotas``) refuses the whole batch with TenantQuotaFull.

        With tracing on (docs/tracing.md) the enqueue is a span ``send <queue>``, a child of
        the current one, and each job that carries no ``traceparent`` stores that span's.
        """
        batch = list(jobs)
        with self.tracing.send(batch) as sent:
            if self._payload_models:  # queues without a model pay this one check
                batch = validate_jobs(batch, self._payload_models)
            if self._keyed:  # likewise queues without a flow key
                batch = _with_flow_keys(batch, self._keyed)
            batch = sent.stamped(batch)
            backend = await self.open()
            # The queues' max_depth is the stored one (see queue()): the backend checks it.
            stored = await backend.enqueue(
                batch, tenant_max_depth=self._quotas_for(batch), connection=connection
            )
            sent.stored(stored)
        if self.observers:
            notify_enqueued(self.observers, stored)
        return stored

    def _quotas_for(self, batch: Sequence[NewJob]) -> dict[str, int] | None:
        """The quota of each tenant in ``batch`` that has one (None: none to check)."""
        quotas = self.tenant_quotas
        if not quotas:
            return None
        caps = {}
        for tenant in {job.tenant for job in batch if job.tenant is not None}:
            cap = quotas.get(tenant, quotas.get("*"))
            if cap is not None:
                caps[tenant] = cap
        return caps or None

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

    # -- runs -----------------------------------------------------------------------------
    async def start_run(
        self,
        *,
        name: str | None = None,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        on_complete: str | None = None,
        webhook: str | None = None,
        tenant: str | None = None,
    ) -> Run:
        """Start an open run: jobs join it with ``enqueue(..., run=run.id)``; seal it with
        :meth:`seal_run` once every top-level job is enqueued. It completes when sealed and
        every job in it finished; then, exactly once, the ``on_complete`` queue gets a job
        whose payload is the run's summary, and ``webhook`` gets ``run.completed``.

        ``key``: starting a run with the key of a stored run returns that run instead
        (``run.created`` is False), so a retried start is harmless. ``meta``: a JSON object
        kept with the run. ``tenant``: whose run it is (tokens bound to another tenant do not
        see it). See docs/runs.md."""
        new = NewRun.create(
            name=name, key=key, meta=meta, on_complete=on_complete, webhook=webhook, tenant=tenant
        )
        return await (await self.open()).start_run(new)

    async def seal_run(self, run_id: str) -> Run:
        """Say that no more top-level jobs will join the run (the jobs its running jobs
        enqueue still do); return it. A run whose jobs all finished completes at once.
        RunNotFound when there is no such run."""
        found = await (await self.open()).seal_run(run_id)
        if found is None:
            raise RunNotFound(run_id)
        return found

    async def get_run(self, run_id: str) -> Run:
        """The run and its counts; RunNotFound when there is none (or it was pruned)."""
        found = await (await self.open()).get_run(run_id)
        if found is None:
            raise RunNotFound(run_id)
        return found

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        limit: int = 100,
        before_id: str | None = None,
        tenant: str | None = None,
    ) -> list[Run]:
        """Runs, newest first; the next page is ``before_id=<last run's id>``. ``tenant``:
        only that tenant's runs."""
        return await (await self.open()).list_runs(
            state=state, limit=limit, before_id=before_id, tenant=tenant
        )

    # -- inspecting and operating -------------------------------------------------------
    @overload
    async def get_job(self, job_id: int, /) -> Job: ...

    @overload
    async def get_job(self, queue: str, /, *, key: str) -> Job: ...

    async def get_job(self, job: int | str, /, *, key: str | None = None) -> Job:
        """The job with that id: ``get_job(job_id)``; or the job a producer enqueued with an
        idempotency key: ``get_job(queue, key=...)``. Raise JobNotFound when there is none
        (or it was pruned)."""
        backend = await self.open()
        if isinstance(job, str):
            if key is None:
                raise ConfigError(f"get_job({job!r}) names a queue: give its key=..., or a job id")
            validate_queue_name(job)
            validate_key(key)
            found = await backend.get_job_by_key(job, key)
            if found is None:
                raise JobNotFound(queue=job, key=key)
            return found
        if key is not None:
            raise ConfigError("get_job takes a job id, or a queue and its key=..., not both")
        found = await backend.get_job(job)
        if found is None:
            raise JobNotFound(job)
        return found

    async def wait(self, job_id: int, *, timeout_s: float | None = None) -> Job:
        """Wait until the job is finished (completed, dead or cancelled) and return it as
        stored, at once if it already is. The backend wakes the wait (no busy polling; on
        SQLite a job finished by another process is noticed within 0.2 s).

        ``timeout_s``: None waits as long as it takes (``asyncio.timeout`` around the call
        works too). Raises :class:`~forebay.errors.WaitTimeout` (also a TimeoutError) when the
        job is not finished by then, and JobNotFound when there is no such job (or it is
        deleted meanwhile).
        """
        timeout_s = _timeout_seconds(timeout_s)
        found = await (await self.open()).wait_for_finish(job_id, timeout_s=timeout_s)
        if found is None:
            raise JobNotFound(job_id)
        if not found.state.terminal:
            raise WaitTimeout(found.id, str(found.state), timeout_s)
        return found

    def wait_sync(self, job_id: int, *, timeout_s: float | None = None) -> Job:
        """:meth:`wait` for synchronous code (scripts, WSGI views). Thread-safe."""
        return self._run_sync(lambda: self.wait(job_id, timeout_s=timeout_s))

    async def list_jobs(
        self, where: JobFilter | None = None, *, limit: int = 100, before_id: int | None = None
    ) -> list[Job]:
        return await (await self.open()).list_jobs(
            where or JobFilter(), limit=limit, before_id=before_id
        )

    async def list_dead(
        self,
        where: JobFilter | None = None,
        *,
        limit: int = 100,
        before: DeadCursor | None = None,
    ) -> list[Job]:
        """Dead jobs matching ``where``, the latest death first; the next page is
        ``before=DeadCursor.after(last_job_of_this_page)``."""
        return await (await self.open()).list_dead(where or JobFilter(), limit=limit, before=before)

    async def counts(self, *, tenant: str | None = None) -> list[QueueCounts]:
        """Each queue's jobs per state, and how many a flow limit holds back (``throttled``);
        ``tenant``: only that tenant's jobs."""
        return await (await self.open()).counts(tenant=tenant)

    async def cancel(self, *job_ids: int) -> list[int]:
        """Cancel queued or running jobs; return the ids that were cancelled (not those already
        finished, or unknown). A running job is cancelled at once in the store; the worker
        running it stops its handler at its next heartbeat (see docs/controls.md)."""
        return await (await self.open()).cancel(job_ids)

    async def cancel_where(self, where: JobFilter, *, dry_run: bool = False) -> int:
        """Cancel every waiting, queued and running job that ``where`` matches; return how
        many were (with ``dry_run``: would be) cancelled. ``where.state`` may be waiting,
        queued or running."""
        if where.state not in (None, JobState.WAITING, JobState.QUEUED, JobState.RUNNING):
            raise ConfigError(
                f"only waiting, queued or running jobs can be cancelled, not {where.state} ones"
            )
        return await (await self.open()).cancel_where(where, dry_run=dry_run)

    async def run_now(self, job_id: int) -> Job:
        """Make a queued job due now: a scheduled one, or a retry waiting out its backoff.
        Raises JobNotFound, or JobStateConflict when the job is not queued."""
        backend = await self.open()
        moved = await backend.run_now([job_id])
        job = await backend.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job_id not in moved:
            raise JobStateConflict(
                job_id, str(job.state), f"job {job_id} is {job.state}; only queued jobs can run now"
            )
        return job

    async def set_queue(
        self,
        queue: str,
        *,
        paused: bool | None = None,
        max_depth: int | Keep | None = KEEP,
        limits: FlowLimits | Keep = KEEP,
    ) -> QueueSettings:
        """Store ``queue``'s settings for every process (``max_depth=None`` removes the limit;
        ``limits``: its flow limits, which a worker that declares the queue replaces with its
        own when it starts)."""
        return await (await self.open()).set_queue(
            queue, paused=paused, max_depth=max_depth, limits=limits
        )

    async def pause(self, queue: str) -> QueueSettings:
        """Stop every worker (every process, every host) leasing ``queue``; enqueues go on."""
        return await self.set_queue(queue, paused=True)

    async def resume(self, queue: str) -> QueueSettings:
        """Let workers lease ``queue`` again."""
        return await self.set_queue(queue, paused=False)

    async def queue_settings(self) -> dict[str, QueueSettings]:
        """The stored settings of every queue that has some, by queue name."""
        return {s.queue: s for s in await (await self.open()).queue_settings()}

    async def replay(self, where: JobFilter | None = None, *, dry_run: bool = False) -> int:
        """Put dead jobs back to queued with fresh counters; return how many."""
        return await (await self.open()).replay(where or JobFilter(), dry_run=dry_run)

    async def purge(self, where: JobFilter | None = None, *, dry_run: bool = False) -> int:
        """Delete dead jobs; return how many."""
        return await (await self.open()).purge(where or JobFilter(), dry_run=dry_run)

    # -- the fleet ------------------------------------------------------------------------
    async def list_workers(self) -> list[WorkerInfo]:
        """The worker processes registered in the store whose heartbeat is recent enough (on
        every host; see :mod:`forebay.fleet`), oldest first."""
        return await (await self.open()).list_workers()

    async def throughput(
        self, *, since: timedelta | datetime = timedelta(hours=1), queue: str | None = None
    ) -> list[Throughput]:
        """Jobs finished per queue and minute (completed, dead, reclaimed) since ``since`` (a
        time, or how long ago), as the store counted them; ``queue``: that queue only."""
        start = (utcnow() - since) if isinstance(since, timedelta) else since
        return await (await self.open()).throughput(since=start.timestamp(), queue=queue)

    async def totals(self) -> list[QueueTotals]:
        """Jobs finished per queue since the store was created (completed, dead, reclaimed)."""
        return await (await self.open()).totals()

    # -- schedules ----------------------------------------------------------------------
    async def save_schedules(self) -> None:
        """Store the schedules this app declares (a worker does it when it starts); a stored
        schedule of the same name gets the new definition and keeps its last tick."""
        await (await self.open()).save_schedules(list(self.schedules.values()))

    async def list_schedules(self) -> list[Schedule]:
        """Every stored schedule (whichever app saved it), with its last tick."""
        return await (await self.open()).list_schedules()

    async def delete_schedules(self, *names: str) -> list[str]:
        """Delete stored schedules (their jobs stay); return the names that existed. A worker
        of an app that still declares one stores it again when it starts."""
        return await (await self.open()).delete_schedules(names)

    # -- working ------------------------------------------------------------------------
    def worker(
        self, queues: Iterable[str] | None = None, settings: WorkerSettings | None = None
    ) -> Worker:
        """A worker for ``queues`` (default: every queue with a handler, and the built-in
        ``forebay.webhooks``)."""
        declared = {n: q for n, q in self.queues.items() if q.handler is not None}
        names = list(queues) if queues is not None else list(declared)
        if queues is None and names:
            names.extend(n for n in self.builtin_queues if n not in declared)
        handled = {**self.builtin_queues, **declared}
        unknown = [n for n in names if n not in handled]
        if unknown:
            raise ConfigError(
                f"no handler for queue(s) {', '.join(unknown)}; "
                f"this app handles: {', '.join(sorted(handled)) or 'nothing'}"
            )
        if not names:
            raise ConfigError("this app declares no handler: decorate a function with @app.handler")
        return Worker(
            self.backend,
            [handled[n] for n in names],
            settings,
            observers=self.observers,
            schedules=list(self.schedules.values()),
            enqueue=self.enqueue_many,
            tracing=self.tracing,
        )

    async def run_worker(
        self,
        queues: Iterable[str] | None = None,
        *,
        burst: bool = False,
        settings: WorkerSettings | None = None,
    ) -> Worker:
        """Run a worker until stopped (or, with ``burst``, until no job is due); return it.

        A burst worker waits for the jobs a rate limit holds back, and runs them at the rate:
        it drains the queue. It stores the flow limits its queues declare when it starts, as
        every worker does."""
        settings = settings or WorkerSettings()
        if burst:
            settings = replace(settings, burst=True)
        worker = self.worker(queues, settings)
        await self.open()
        await worker.run()
        return worker


def _with_flow_keys(batch: list[NewJob], keyed: Mapping[str, QueueConfig]) -> list[NewJob]:
    """``batch`` with the flow keys its queues declare worked out (InvalidPayload naming the
    job's position when one cannot be)."""
    out = []
    for index, job in enumerate(batch):
        config = keyed.get(job.queue)
        if config is None:
            out.append(job)
            continue
        try:
            out.append(config.with_flow_keys(job))
        except InvalidPayload as exc:
            if len(batch) == 1:
                raise
            raise InvalidPayload(f"job {index} of {len(batch)}: {exc}") from exc
    return out


def _timeout_seconds(timeout_s: float | None) -> float:
    if timeout_s is None:
        return math.inf
    seconds = float(timeout_s)
    if math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"timeout_s must be zero or more seconds, not {timeout_s!r}")
    return seconds


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
