"""``GET /v1/jobs`` and ``GET /v1/jobs/{job_id}``: reading jobs (``read`` scope);
``POST /v1/jobs/{job_id}/cancel``, ``POST /v1/jobs/cancel`` (by filter) and
``POST /v1/jobs/{job_id}/run-now``: the operator's controls (``admin``, docs/controls.md).

``GET /v1/jobs?run_id=R`` lists the jobs of a run (docs/runs.md);
``GET /v1/jobs?queue=Q&key=K`` finds the job a producer enqueued with its own idempotency key;
``GET /v1/jobs/{job_id}?wait=S`` long-polls: it answers as soon as the job is finished (200),
or after ``S`` seconds (at most :data:`MAX_WAIT_S`) with the job as it stands (202).

A token bound to a tenant lists, reads and acts on only that tenant's jobs: another tenant's job
by id answers 404 ``job_not_found``, as a job that does not exist does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import FastAPI, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.errors import JobNotFound, WaitTimeout
from forebay.http.body import parse_json
from forebay.http.errors import ApiError, invalid_payload
from forebay.http.models import (
    BeforeIdParam,
    CancelFilterIn,
    CancelledOut,
    ErrorOut,
    JobDetailOut,
    JobsPage,
    LimitParam,
    QueueParam,
    WithoutNul,
    job_id_path,
)
from forebay.http.openapi import ERRORS, NOT_JSON, flat_schema, json_body
from forebay.http.responses import jobs_page
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import Job, JobFilter, JobState

__all__ = ["MAX_WAIT_S", "add_routes"]

MAX_WAIT_S = 60.0
"""The longest ``?wait=`` a request may ask for (proxies and clients time out beyond)."""

KeyParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=512,
        description="The job enqueued with this idempotency key (give its queue too).",
    ),
    WithoutNul,
]
RunIdParam = Annotated[
    str | None,
    Query(min_length=1, max_length=256, description="Only the jobs of this run."),
    WithoutNul,
]
WaitParam = Annotated[
    float | None,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description=(
            f"Wait up to this many seconds (at most {MAX_WAIT_S:g}) for the job to finish: the "
            "answer is 200 once it is completed, dead or cancelled, 202 if it is not by then."
        ),
    ),
]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add the routes of ``/v1/jobs``."""
    app = service.app

    @api.get(
        "/v1/jobs",
        tags=["jobs"],
        summary="Jobs, newest first, by queue and state; page with before_id; or by key",
        response_model=JobsPage,
        responses=ERRORS,
    )
    async def list_jobs(
        request: Request,
        queue: QueueParam = None,
        state: Annotated[JobState | None, Query()] = None,
        key: KeyParam = None,
        run_id: RunIdParam = None,
        before_id: BeforeIdParam = None,
        limit: LimitParam = 100,
    ) -> Response:
        """With ``key`` (and ``queue``): the one job enqueued with that key, if it matches the
        other filters, else none. ``state=waiting``: the jobs waiting for their parents."""
        tenant = service.tenant(request, Scope.READ)
        where = JobFilter(queue=queue, state=state, run_id=run_id, tenant=tenant)
        if key is not None:
            return jobs_page(await _by_key(where, key, before_id), limit)
        jobs = await app.list_jobs(where, limit=limit, before_id=before_id)
        return jobs_page(jobs, limit)

    async def _by_key(where: JobFilter, key: str, before_id: int | None) -> list[Job]:
        if where.queue is None:
            raise ApiError(
                400,
                "invalid_request",
                "key needs queue: a key names one job of its queue, e.g. /v1/jobs?queue=Q&key=K",
            )
        try:
            job = await app.get_job(where.queue, key=key)
        except JobNotFound:
            return []
        if where.state is not None and job.state is not where.state:
            return []
        if where.run_id is not None and job.run_id != where.run_id:
            return []
        if where.tenant is not None and job.tenant != where.tenant:
            return []
        return [job] if before_id is None or job.id < before_id else []

    @api.get(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        summary="A job: state, attempt, progress, times, result, errors; ?wait= long-polls",
        response_model=JobDetailOut,
        responses={
            **ERRORS,
            202: {"model": JobDetailOut, "description": "Waited, and the job is not finished yet"},
        },
    )
    async def get_job(
        request: Request, job_id: int = job_id_path, wait: WaitParam = None
    ) -> Response:
        tenant = service.tenant(request, Scope.READ)
        found = await service.own_job(tenant, job_id)
        if wait is None:
            return JSONResponse(found.to_dict())
        try:
            job = await app.wait(job_id, timeout_s=wait)
        except WaitTimeout:
            job = await app.get_job(job_id)  # as it stands now (it may have just finished)
        return JSONResponse(job.to_dict(), status_code=200 if job.state.terminal else 202)

    _add_controls(api, service)


def _add_controls(api: FastAPI, service: Service) -> None:
    """The operator's controls on jobs (``admin`` scope, docs/controls.md)."""
    app = service.app

    @api.post(
        "/v1/jobs/cancel",
        tags=["jobs"],
        summary="Cancel every unfinished job a filter matches (dry_run: count them)",
        response_model=CancelledOut,
        responses={**ERRORS, **NOT_JSON},
        openapi_extra=json_body(flat_schema(CancelFilterIn), required=True),
    )
    async def cancel_jobs(request: Request) -> Response:
        """A filter is needed (an empty one would cancel everything): queue, state (waiting,
        queued or running), run_id, error_type or ids. Running jobs' handlers stop within a
        heartbeat."""
        tenant = service.tenant(request, Scope.ADMIN)
        where, dry_run = await _cancel_filter(service, request, tenant)
        count = await app.cancel_where(where, dry_run=dry_run)
        return JSONResponse({"cancelled": count, "dry_run": dry_run})

    @api.post(
        "/v1/jobs/{job_id}/cancel",
        tags=["jobs"],
        summary="Cancel a waiting, queued or running job",
        response_model=JobDetailOut,
        responses={
            **ERRORS,
            409: {"model": ErrorOut, "description": "The job is finished (completed or dead)"},
        },
    )
    async def cancel_job(request: Request, job_id: int = job_id_path) -> Response:
        """A running job is cancelled at once; its worker stops the handler within a heartbeat.
        Cancelling a cancelled job again answers 200 with the job, as ``forebay cancel`` exits 0
        saying it was already cancelled."""
        await service.own_job(service.tenant(request, Scope.ADMIN), job_id)
        await app.cancel(job_id)
        job = await app.get_job(job_id)
        if job.state is not JobState.CANCELLED:
            raise ApiError(
                409,
                "job_not_cancellable",
                f"job {job_id} is {job.state}; only waiting, queued or running jobs can be "
                "cancelled",
            )
        return JSONResponse(job.to_dict())

    @api.post(
        "/v1/jobs/{job_id}/run-now",
        tags=["jobs"],
        summary="Make a scheduled or retrying job due now",
        response_model=JobDetailOut,
        responses={
            **ERRORS,
            409: {"model": ErrorOut, "description": "The job is not queued (running, finished)"},
        },
    )
    async def run_job_now(request: Request, job_id: int = job_id_path) -> Response:
        """A queued job whose run_at is in the future (scheduled, or a retry waiting out its
        backoff) becomes due at once; a job that is not queued answers 409 ``job_not_queued``."""
        await service.own_job(service.tenant(request, Scope.ADMIN), job_id)
        return JSONResponse((await app.run_now(job_id)).to_dict())


async def _cancel_filter(
    service: Service, request: Request, tenant: str | None
) -> tuple[JobFilter, bool]:
    raw = await service.read_json_body(
        request, service.settings.max_body_bytes, json_only=service.json_only
    )
    body = parse_json(raw, allow_empty=True)
    try:
        given = CancelFilterIn.model_validate(body if body is not None else {})
    except ValidationError as exc:
        raise invalid_payload(exc) from None
    where = JobFilter(
        queue=given.queue,
        state=None if given.state is None else JobState(given.state),
        run_id=given.run_id,
        error_type=given.error_type,
        ids=tuple(given.ids) if given.ids is not None else None,
    )
    if where == JobFilter():
        raise ApiError(
            400,
            "invalid_payload",
            "give a filter (queue, state, run_id, error_type or ids): an empty one would "
            "cancel every job",
        )
    return replace(where, tenant=tenant), given.dry_run
