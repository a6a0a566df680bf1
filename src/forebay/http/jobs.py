"""``GET /v1/jobs`` and ``GET /v1/jobs/{job_id}``: reading jobs (``read`` scope);
``POST /v1/jobs/{job_id}/cancel``, ``POST /v1/jobs/cancel`` (by filter) and
``POST /v1/jobs/{job_id}/run-now``: the operator's controls (``admin``, docs/operations.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.http.body import parse_json
from forebay.http.errors import ApiError, invalid_payload
from forebay.http.models import (
    BeforeIdParam,
    CancelFilterIn,
    CancelledOut,
    ErrorOut,
    JobOut,
    JobsPage,
    LimitParam,
    QueueParam,
    job_id_path,
)
from forebay.http.openapi import ERRORS, NOT_JSON, flat_schema, json_body
from forebay.http.responses import jobs_page
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import JobFilter, JobState

__all__ = ["add_routes"]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add the routes of ``/v1/jobs``."""
    app = service.app

    @api.get(
        "/v1/jobs",
        tags=["jobs"],
        summary="Jobs, newest first, by queue and state; page with before_id",
        response_model=JobsPage,
        responses=ERRORS,
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
        return jobs_page(jobs, limit)

    @api.get(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        summary="A job: state, attempt, progress, errors, timestamps",
        response_model=JobOut,
        responses=ERRORS,
    )
    async def get_job(request: Request, job_id: int = job_id_path) -> Response:
        service.authorize(request, Scope.READ)
        job = await app.get_job(job_id)
        return JSONResponse(job.to_dict())

    @api.post(
        "/v1/jobs/cancel",
        tags=["jobs"],
        summary="Cancel every queued and running job a filter matches (dry_run: count them)",
        response_model=CancelledOut,
        responses={**ERRORS, **NOT_JSON},
        openapi_extra=json_body(flat_schema(CancelFilterIn), required=True),
    )
    async def cancel_jobs(request: Request) -> Response:
        """A filter is needed (an empty one would cancel everything): queue, state (queued or
        running), run_id, error_type or ids. Running jobs' handlers stop within a heartbeat."""
        service.authorize(request, Scope.ADMIN)
        where, dry_run = await _cancel_filter(service, request)
        count = await app.cancel_where(where, dry_run=dry_run)
        return JSONResponse({"cancelled": count, "dry_run": dry_run})

    @api.post(
        "/v1/jobs/{job_id}/cancel",
        tags=["jobs"],
        summary="Cancel a queued or running job",
        response_model=JobOut,
        responses={
            **ERRORS,
            409: {"model": ErrorOut, "description": "The job is finished (completed or dead)"},
        },
    )
    async def cancel_job(request: Request, job_id: int = job_id_path) -> Response:
        """A running job is cancelled at once; its worker stops the handler within a heartbeat.
        Cancelling a cancelled job again answers 200 with the job, as ``forebay cancel`` exits 0
        saying it was already cancelled."""
        service.authorize(request, Scope.ADMIN)
        await app.cancel(job_id)
        job = await app.get_job(job_id)
        if job.state is not JobState.CANCELLED:
            raise ApiError(
                409,
                "job_not_cancellable",
                f"job {job_id} is {job.state}; only queued or running jobs can be cancelled",
            )
        return JSONResponse(job.to_dict())

    @api.post(
        "/v1/jobs/{job_id}/run-now",
        tags=["jobs"],
        summary="Make a scheduled or retrying job due now",
        response_model=JobOut,
        responses={
            **ERRORS,
            409: {"model": ErrorOut, "description": "The job is not queued (running, finished)"},
        },
    )
    async def run_job_now(request: Request, job_id: int = job_id_path) -> Response:
        """A queued job whose run_at is in the future (scheduled, or a retry waiting out its
        backoff) becomes due at once; a job that is not queued answers 409 ``job_not_queued``."""
        service.authorize(request, Scope.ADMIN)
        return JSONResponse((await app.run_now(job_id)).to_dict())


async def _cancel_filter(service: Service, request: Request) -> tuple[JobFilter, bool]:
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
    return where, given.dry_run
