"""``GET /v1/jobs``, ``GET /v1/jobs/{job_id}`` and ``POST /v1/jobs/{job_id}/cancel``: reading
jobs (``read`` scope) and cancelling a queued one (``admin``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.http.errors import ApiError
from forebay.http.models import (
    BeforeIdParam,
    ErrorOut,
    JobDetailOut,
    JobsPage,
    LimitParam,
    QueueParam,
    job_id_path,
)
from forebay.http.openapi import ERRORS
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
        summary="A job: state, attempt, progress, timestamps, result and errors history",
        response_model=JobDetailOut,
        responses=ERRORS,
    )
    async def get_job(request: Request, job_id: int = job_id_path) -> Response:
        service.authorize(request, Scope.READ)
        job = await app.get_job(job_id)
        return JSONResponse(job.to_dict())

    @api.post(
        "/v1/jobs/{job_id}/cancel",
        tags=["jobs"],
        summary="Cancel a queued job",
        response_model=JobDetailOut,
        responses={
            **ERRORS,
            409: {"model": ErrorOut, "description": "The job is not queued any more"},
        },
    )
    async def cancel_job(request: Request, job_id: int = job_id_path) -> Response:
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
