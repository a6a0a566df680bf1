"""The HTTP API: :func:`create_app` builds one FastAPI app for one :class:`~forebay.Forebay`.

Nothing happens at import or in :func:`create_app` beyond building routes. The app's lifespan
(run by the server) opens the backend, registers the metrics and log observers, and runs the
app's workers in the same event loop unless ``settings.workers`` is False; on shutdown it stops
them gracefully and closes the backend. Requests never wait on each other in this layer: each
awaits its own enqueue, and the backend group-commits concurrent ones (DESIGN §6).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AwareDatetime, BaseModel, ValidationError
from starlette.datastructures import Headers

from forebay.app import Forebay
from forebay.errors import BackendError, ForebayError, InvalidPayload
from forebay.execution import tuning
from forebay.execution.supervisor import InProcessWorkers
from forebay.job import JSON, Job, JobFilter, JobState, NewJob, QueueCounts
from forebay.observer import Observer
from forebay.service.auth import Authorizer
from forebay.service.body import parse_json, read_body
from forebay.service.cross_site import BrowserGuard, allow_cross_origin, require_json
from forebay.service.dashboard import mount_dashboard
from forebay.service.errors import ApiError, install_error_handlers
from forebay.service.logs import EnqueueLogger
from forebay.service.metrics import Metrics, PrometheusObserver
from forebay.service.models import (
    MAX_JOB_ID,
    DeadFilterIn,
    DeadPage,
    ErrorOut,
    JobAccepted,
    JobIn,
    JobOut,
    JobsPage,
    QueuesOut,
    ReadyOut,
    SourceAccepted,
    WithoutNul,
)
from forebay.service.settings import Scope, ServiceSettings

__all__ = ["create_app"]

log = logging.getLogger("forebay.service")

_JOBS_PATH = "/v1/queues/{queue}/jobs"
_BARE_PATH = "/v1/_bare/queues/{queue}/jobs"


class Service:
    """What the routes share: the app, settings, metrics, tokens and in-process workers."""

    def __init__(self, app: Forebay, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings
        self.metrics = Metrics()
        self.authorizer = Authorizer(settings.api_tokens)
        # Without tokens, JSON routes take JSON only (a web page cannot post it cross-site).
        self.json_only = not settings.api_tokens
        self.workers = InProcessWorkers(app, shutdown_grace_s=settings.shutdown_grace_s)
        self._observers: list[Observer] = [PrometheusObserver(self.metrics), EnqueueLogger()]

    def authorize(self, request: Request, scope: Scope) -> None:
        self.authorizer.check(request.headers.get("authorization"), scope)

    async def read_json_body(self, request: Request, limit: int, *, json_only: bool) -> bytes:
        """The body of a JSON route (see :mod:`forebay.service.cross_site` for ``json_only``)."""
        if json_only:
            require_json(request.headers)
        return await read_body(request, limit)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.app.observers.extend(self._observers)
        for source in self.app.sources.values():
            if source.auth is None:
                log.warning("source %s accepts unauthenticated requests (auth=None)", source.name)
        try:
            await self.app.open()  # a ConfigError (bad URL, missing folder) stops the start-up
        except BackendError as exc:
            log.warning("backend unreachable at start-up (%s); answering 503 until it is", exc)
        if self.settings.workers:
            self.workers.start()
        log.info(
            "forebay service ready: queues %s, sources %s, workers %s",
            ", ".join(sorted(self.app.queues)) or "none",
            ", ".join(sorted(self.app.sources)) or "none",
            ", ".join(self.workers.queues) if self.settings.workers else "off",
        )

    async def stop(self) -> None:
        await self.workers.stop()
        for observer in self._observers:
            if observer in self.app.observers:
                self.app.observers.remove(observer)
        await self.app.close()

    # -- intake ---------------------------------------------------------------------------
    def queue_jobs(self, queue: str, body: JSON) -> tuple[list[NewJob], bool]:
        """The jobs of a ``POST /v1/queues/{queue}/jobs`` body, and whether it was a list."""
        if isinstance(body, list):
            if not body:
                raise InvalidPayload("the list of jobs is empty; send at least one job")
            items = [_job_in(item, f"[{i}].") for i, item in enumerate(body)]
        else:
            items = [_job_in(body)]
        try:
            jobs = [_new_job(queue, item) for item in items]
        except RecursionError:
            raise InvalidPayload("the payload is nested too deeply") from None
        return jobs, isinstance(body, list)

    def intake_label(self, path: str) -> str | None:
        """The ``source`` metric label of an intake request path (None: not intake)."""
        if path.startswith("/v1/queues/") and path.endswith("/jobs"):
            return "api"
        if path.startswith("/v1/sources/"):
            name = path[len("/v1/sources/") :]
            return name if name in self.app.sources else "unknown"
        if path.startswith("/v1/_bare/"):
            return "bare"
        return None

    async def queue_counts(self) -> list[QueueCounts] | None:
        try:
            async with asyncio.timeout(self.settings.readiness_timeout_s):
                return await self.app.counts()
        except (ForebayError, TimeoutError) as exc:
            log.warning("could not read queue counts: %s", exc or type(exc).__name__)
            return None


def _new_job(queue: str, item: JobIn) -> NewJob:
    return NewJob.create(
        queue,
        item.payload,
        key=item.key,
        priority=item.priority,
        run_at=item.run_at,
        delay=item.delay_s,
        parsed=True,
    )


def _job_in(item: JSON, where: str = "") -> JobIn:
    if not isinstance(item, dict):
        raise InvalidPayload(
            f"{where or 'the body'} must be a JSON object such as "
            '{"payload": {...}}, or a list of them'
        )
    try:
        return JobIn.model_validate(item)
    except ValidationError as exc:
        raise _invalid(exc, where) from None


def _invalid(exc: ValidationError, where: str = "") -> InvalidPayload:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return InvalidPayload(f"{where}{field or 'body'}: {first['msg']}")


T = TypeVar("T")

# Bodies and answers this large are parsed, split and rendered in a worker thread, so one big
# bulk delivery does not hold up the other requests' answers for a few hundred milliseconds.
_OFF_LOOP_BYTES = 256 * 1024
_OFF_LOOP_JOBS = 500


async def _off_loop(work: Callable[[], T], *, heavy: bool) -> T:
    return await asyncio.to_thread(work) if heavy else work()


def _jobs_page(jobs: list[Job], limit: int) -> Response:
    next_id = jobs[-1].id if len(jobs) == limit else None
    return JSONResponse({"jobs": [j.to_dict() for j in jobs], "next_before_id": next_id})


def _accepted(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "queue": job.queue,
        "key": job.key,
        "state": str(job.state),
        "created": job.created,
        "run_at": None if job.run_at is None else job.run_at.isoformat(),
    }


def _status(jobs: list[Job]) -> int:
    """201 when the request stored a new job; 200 when every job was already stored."""
    return 201 if any(j.created for j in jobs) else 200


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    assert "$defs" not in schema, "inline request schemas must be flat"
    return schema


def _json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the route reads itself (size-limited)."""
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "Malformed JSON or an invalid field",
        401: "Missing or unknown credentials",
        403: "The credentials do not allow this",
        404: "Unknown queue, source or job",
        503: "The backend is unreachable; retry after Retry-After",
    }.items()
}
_NOT_JSON: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorOut, "description": "Without API tokens: the body is not sent as JSON"}
}
_INTAKE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    **_NOT_JSON,
    413: {"model": ErrorOut, "description": "The body is over the limit"},
    429: {"model": ErrorOut, "description": "The queue is full; retry after Retry-After"},
}


def create_app(
    app: Forebay, settings: ServiceSettings | None = None, *, tune_gc: bool = False
) -> FastAPI:
    """The HTTP service for ``app`` (see :mod:`forebay.service` and docs/http.md).

    ``tune_gc``: once started, tune the process's garbage collector for serving (see
    :mod:`forebay.service.tuning`); ``forebay serve`` does, an app that embeds this one decides
    for its own process."""
    settings = settings or ServiceSettings()
    service = Service(app, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if tune_gc:
            tuning.tune_gc()
        try:
            yield
        finally:
            await service.stop()

    api = FastAPI(
        title="forebay",
        summary="Durable intake: jobs are answered after they are stored.",
        version=_version(),
        lifespan=lifespan,
    )
    api.state.service = service
    install_error_handlers(api, backend_retry_after_s=settings.retry_after_s)
    # Middleware added last runs first: metrics see every answer, CORS headers go on refusals.
    if not settings.api_tokens:
        api.add_middleware(
            BrowserGuard,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.cors_origins,
        )
    if settings.cors_origins:
        allow_cross_origin(api, settings.cors_origins)
    api.add_middleware(IntakeMetrics, service=service)
    _intake_routes(api, service)
    _source_routes(api, service)
    _job_routes(api, service)
    _dead_routes(api, service)
    _probe_routes(api, service)
    mount_dashboard(api)
    _document_security(api, service)
    return api


def _version() -> str:
    from forebay import __version__

    return __version__


# -- intake ---------------------------------------------------------------------------------
def _intake_routes(api: FastAPI, service: Service) -> None:
    app, settings = service.app, service.settings
    job_schema = _schema(JobIn)
    jobs_body = _json_body(
        {"oneOf": [job_schema, {"type": "array", "items": job_schema, "minItems": 1}]}
    )

    async def read_jobs(queue: str, request: Request) -> tuple[list[NewJob], bool]:
        service.authorize(request, Scope.ENQUEUE)
        if queue not in app.queues:
            raise ApiError(
                404,
                "unknown_queue",
                f"queue {queue!r} is not declared by this app; declared queues: "
                f"{', '.join(sorted(app.queues)) or 'none'}",
            )
        raw = await service.read_json_body(
            request, settings.max_body_bytes, json_only=service.json_only
        )
        return await _off_loop(
            lambda: service.queue_jobs(queue, parse_json(raw)), heavy=len(raw) > _OFF_LOOP_BYTES
        )

    @api.post(
        _JOBS_PATH,
        tags=["intake"],
        summary="Enqueue one job or a list of jobs",
        status_code=201,
        response_model=JobAccepted | list[JobAccepted],
        responses={
            200: {
                "model": JobAccepted | list[JobAccepted],
                "description": "Every job's key was already stored: the stored jobs",
            },
            **_INTAKE_ERRORS,
        },
        openapi_extra=jobs_body,
    )
    async def enqueue_jobs(queue: str, request: Request) -> Response:
        """Store the job(s) durably, then answer: 201 when something new was stored, 200
        when every job had a key that was already stored (the existing jobs are returned).
        A list is stored all-or-nothing, in one transaction."""
        jobs, many = await read_jobs(queue, request)
        stored = await app.enqueue_many(jobs)

        def answer() -> Response:
            body = [_accepted(j) for j in stored] if many else _accepted(stored[0])
            return JSONResponse(body, status_code=_status(stored))

        return await _off_loop(answer, heavy=len(stored) > _OFF_LOOP_JOBS)

    if settings.bench_endpoint:

        @api.post(_BARE_PATH, include_in_schema=False)
        async def bare(queue: str, request: Request) -> Response:
            """The enqueue endpoint minus the enqueue (benchmarks measure durability's cost)."""
            jobs, many = await read_jobs(queue, request)
            body = {"id": 0, "queue": queue, "created": True, "jobs": len(jobs), "many": many}
            return JSONResponse(body, status_code=200)


def _source_routes(api: FastAPI, service: Service) -> None:
    app = service.app

    @api.post(
        "/v1/sources/{source}",
        tags=["intake"],
        summary="Receive a webhook for a declared source",
        status_code=201,
        response_model=SourceAccepted,
        responses={
            200: {"model": SourceAccepted, "description": "Nothing new: duplicates or no job"},
            **_INTAKE_ERRORS,
        },
        openapi_extra={
            **_json_body({}),
            "security": [],  # sources use their own header (shared secret or HMAC signature)
        },
    )
    async def receive_source(source: str, request: Request) -> Response:
        """Authenticate with the source's own header, turn the body into jobs, store them."""
        declared = app.sources.get(source)
        if declared is None:
            raise ApiError(404, "unknown_source", f"no source named {source!r} is declared")
        headers = request.headers
        if not declared.authenticate(headers, None):
            _refuse_source(declared.auth.header if declared.auth else "", headers)
        # A source with its own secret is no CSRF target (a page cannot send the header):
        # its senders keep whatever content type they send.
        raw = await service.read_json_body(
            request, declared.max_body_bytes, json_only=service.json_only and declared.auth is None
        )
        if not declared.authenticate(headers, raw):
            header = declared.auth.header if declared.auth else ""
            raise ApiError(403, "forbidden", f"the {header} signature does not match the body")

        def to_jobs() -> list[NewJob]:
            try:
                return declared.jobs(parse_json(raw))
            except RecursionError:
                raise InvalidPayload("the payload is nested too deeply") from None

        jobs = await _off_loop(to_jobs, heavy=len(raw) > _OFF_LOOP_BYTES)
        stored = await app.enqueue_many(jobs) if jobs else []

        def answer() -> Response:
            body = {"source": source, "jobs": [_accepted(j) for j in stored]}
            return JSONResponse(body, status_code=_status(stored))

        return await _off_loop(answer, heavy=len(stored) > _OFF_LOOP_JOBS)


def _refuse_source(header: str, headers: Headers) -> None:
    if header.lower() not in headers:
        raise ApiError(401, "unauthorized", f"missing the {header} header this source requires")
    raise ApiError(403, "forbidden", f"the {header} header does not match this source's secret")


# -- jobs and queues ------------------------------------------------------------------------
JobId = Path(ge=1, le=MAX_JOB_ID, description="The job's id, as answered at enqueue.")
# The query parameters the job lists share (GET /v1/jobs, GET /v1/dead).
QueueParam = Annotated[str | None, Query(min_length=1, max_length=128), WithoutNul]
BeforeIdParam = Annotated[int | None, Query(ge=1, le=MAX_JOB_ID)]
LimitParam = Annotated[int, Query(ge=1, le=1000)]


def _job_routes(api: FastAPI, service: Service) -> None:
    app = service.app

    @api.get(
        "/v1/jobs",
        tags=["jobs"],
        summary="Jobs, newest first, by queue and state; page with before_id",
        response_model=JobsPage,
        responses=_ERRORS,
    )
    async def list_jobs(
        request: Request,
        queue: QueueParam = None,
        state: Annotated[JobState | None, Query()] = None,
        before_id: BeforeIdParam = None,
        limit: LimitParam = 100,
    ) -> Response:
        service.authorize(request, Scope.READ)
        jobs = await app.list_jobs(
            JobFilter(queue=queue, state=state), limit=limit, before_id=before_id
        )
        return _jobs_page(jobs, limit)

    @api.get(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        summary="A job: state, attempt, progress, errors, timestamps",
        response_model=JobOut,
        responses=_ERRORS,
    )
    async def get_job(request: Request, job_id: int = JobId) -> Response:
        service.authorize(request, Scope.READ)
        job = await app.get_job(job_id)
        return JSONResponse(job.to_dict())

    @api.post(
        "/v1/jobs/{job_id}/cancel",
        tags=["jobs"],
        summary="Cancel a queued job",
        response_model=JobOut,
        responses={
            **_ERRORS,
            409: {"model": ErrorOut, "description": "The job is not queued any more"},
        },
    )
    async def cancel_job(request: Request, job_id: int = JobId) -> Response:
        """Only a queued job can be cancelled; cancelling a cancelled job again answers 200."""
        service.authorize(request, Scope.ADMIN)
        await app.cancel(job_id)
        job = await app.get_job(job_id)
        if job.state is not JobState.CANCELLED:
            raise ApiError(
                409,
                "job_not_cancellable",
                f"job {job_id} is {job.state}; only queued jobs can be cancelled",
            )
        return JSONResponse(job.to_dict())

    @api.get(
        "/v1/queues",
        tags=["queues"],
        summary="Counts per queue and state, and the age of the oldest queued job",
        response_model=QueuesOut,
        responses=_ERRORS,
    )
    async def list_queues(request: Request) -> Response:
        service.authorize(request, Scope.READ)
        counts = {c.queue: c for c in await app.counts()}
        names = sorted(set(counts) | set(app.queues))
        rows = []
        for name in names:
            config = app.queues.get(name)
            row = (counts.get(name) or QueueCounts(name)).to_dict()
            row["declared"] = config is not None
            row["handled"] = config is not None and config.handler is not None
            row["max_depth"] = config.max_depth if config is not None else None
            rows.append(row)
        return JSONResponse({"queues": rows})


# -- dead letters ---------------------------------------------------------------------------
def _dead_routes(api: FastAPI, service: Service) -> None:
    app, settings = service.app, service.settings

    @api.get(
        "/v1/dead",
        tags=["dead letters"],
        summary="Dead jobs, newest first; page with before_id",
        response_model=DeadPage,
        responses=_ERRORS,
    )
    async def list_dead(
        request: Request,
        queue: QueueParam = None,
        error_type: Annotated[str | None, Query(min_length=1, max_length=256), WithoutNul] = None,
        since: Annotated[AwareDatetime | None, Query(description="Dead at or after this.")] = None,
        until: Annotated[AwareDatetime | None, Query(description="Dead before this.")] = None,
        before_id: BeforeIdParam = None,
        limit: LimitParam = 100,
    ) -> Response:
        service.authorize(request, Scope.READ)
        where = JobFilter(
            queue=queue, state=JobState.DEAD, error_type=error_type, since=since, until=until
        )
        return _jobs_page(await app.list_jobs(where, limit=limit, before_id=before_id), limit)

    filter_body = _json_body(_schema(DeadFilterIn), required=False)

    async def dead_filter(request: Request) -> tuple[JobFilter, bool]:
        service.authorize(request, Scope.ADMIN)
        raw = await service.read_json_body(
            request, settings.max_body_bytes, json_only=service.json_only
        )
        body = parse_json(raw, allow_empty=True)
        try:
            given = DeadFilterIn.model_validate(body if body is not None else {})
        except ValidationError as exc:
            raise _invalid(exc) from None
        where = JobFilter(
            queue=given.queue,
            state=JobState.DEAD,
            error_type=given.error_type,
            since=given.since,
            until=given.until,
            ids=tuple(given.ids) if given.ids is not None else None,
        )
        return where, given.dry_run

    @api.post(
        "/v1/dead/replay",
        tags=["dead letters"],
        summary="Put matching dead jobs back to queued (fresh attempts)",
        responses={
            200: {"description": '{"replayed": N, "dry_run": bool}'},
            **_ERRORS,
            **_NOT_JSON,
        },
        openapi_extra=filter_body,
    )
    async def replay_dead(request: Request) -> Response:
        where, dry_run = await dead_filter(request)
        count = await app.replay(where, dry_run=dry_run)
        return JSONResponse({"replayed": count, "dry_run": dry_run})

    @api.post(
        "/v1/dead/purge",
        tags=["dead letters"],
        summary="Delete matching dead jobs",
        responses={
            200: {"description": '{"purged": N, "dry_run": bool}'},
            **_ERRORS,
            **_NOT_JSON,
        },
        openapi_extra=filter_body,
    )
    async def purge_dead(request: Request) -> Response:
        where, dry_run = await dead_filter(request)
        count = await app.purge(where, dry_run=dry_run)
        return JSONResponse({"purged": count, "dry_run": dry_run})


# -- probes and metrics ---------------------------------------------------------------------
def _probe_routes(api: FastAPI, service: Service) -> None:
    app = service.app

    @api.get("/healthz", tags=["probes"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz",
        tags=["probes"],
        summary="Backend reachable and, with in-process workers, their heartbeats fresh",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready: see the details"}},
    )
    async def readyz() -> Response:
        backend: dict[str, Any] = {"ok": True}
        counts: list[QueueCounts] = []
        try:
            async with asyncio.timeout(service.settings.readiness_timeout_s):
                store = await app.open()
                await store.ping()
                counts = await app.counts()
        except (ForebayError, TimeoutError) as exc:
            backend = {"ok": False, "error": str(exc) or type(exc).__name__}
        health = service.workers.health()
        workers_ok = health is None or (health.running and health.fresh)
        ready = backend["ok"] and workers_ok
        body = {
            "ready": ready,
            "backend": backend,
            "workers": None if health is None else health.to_dict(),
            "queues": [c.to_dict() for c in counts],
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get(
        "/metrics",
        tags=["probes"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> Response:
        service.metrics.update_queues(await service.queue_counts())
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _document_security(api: FastAPI, service: Service) -> None:
    """Declare the bearer scheme in the OpenAPI schema (checks happen in the routes)."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = get_openapi(
            title=api.title,
            version=api.version,
            summary=api.summary,
            routes=api.routes,
        )
        if not service.authorizer.open:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, operations in schema.get("paths", {}).items():
                if not path.startswith("/v1/"):
                    continue
                for operation in operations.values():
                    operation.setdefault("security", [{"bearer": []}])
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


# -- intake metrics -------------------------------------------------------------------------
Scope_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope_, Receive, Send], Awaitable[None]]


class IntakeMetrics:
    """ASGI middleware: count intake answers by source and status, and time them."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        label = self.service.intake_label(scope["path"])
        if label is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.service.metrics.observe_intake(label, status, time.perf_counter() - started)
