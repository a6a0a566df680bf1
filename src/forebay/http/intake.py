"""``POST /v1/queues/{queue}/jobs``: store one job or a list of jobs, answered once they are
durable.

The request is checked in the order that costs least first: the token's ``enqueue`` scope, the
queue being declared, the body's size (before reading past the limit), its content type (JSON
only without tokens), JSON, then each job's fields. Anything wrong is a 4xx and nothing is
stored; a list is stored all-or-nothing, in one transaction. Concurrent requests are
group-committed by the backend: each awaits only its own jobs.

Right after the token is known, its intake rate (``FOREBAY_TOKEN_RATE``) is spent: past it, 429
``rate_limited`` before the body is read. A token bound to a tenant enqueues that tenant's jobs:
a job naming no tenant gets it, one naming another is refused 403 (nothing stored).

With tracing on, the enqueue continues the trace of the request's ``traceparent`` header (or
starts one): see :mod:`forebay.tracing`.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.errors import InvalidPayload, JobNotFound, RunNotFound, UnknownParent, UnknownRun
from forebay.http.body import parse_json
from forebay.http.errors import ApiError, invalid_payload
from forebay.http.models import JobAccepted, JobIn
from forebay.http.openapi import INTAKE_ERRORS, flat_schema, json_body
from forebay.http.responses import OFF_LOOP_BYTES, OFF_LOOP_JOBS, accepted, off_loop, status
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.job import JSON, NewJob
from forebay.tracing import continue_trace

__all__ = ["JOBS_PATH", "add_routes", "jobs_of", "read_jobs"]

JOBS_PATH = "/v1/queues/{queue}/jobs"


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``POST /v1/queues/{queue}/jobs``."""
    job_schema = flat_schema(JobIn)
    jobs_body = json_body(
        {"oneOf": [job_schema, {"type": "array", "items": job_schema, "minItems": 1}]}
    )

    @api.post(
        JOBS_PATH,
        tags=["intake"],
        summary="Enqueue one job or a list of jobs",
        status_code=201,
        response_model=JobAccepted | list[JobAccepted],
        responses={
            200: {
                "model": JobAccepted | list[JobAccepted],
                "description": "Every job's key was already stored: the stored jobs",
            },
            **INTAKE_ERRORS,
        },
        openapi_extra=jobs_body,
    )
    async def enqueue_jobs(queue: str, request: Request) -> Response:
        """Store the job(s) durably, then answer: 201 when something new was stored, 200
        when every job had a key that was already stored (the existing jobs are returned).
        A list is stored all-or-nothing, in one transaction."""
        jobs, many = await read_jobs(service, queue, request)
        tenant = service.tenant(request, Scope.ENQUEUE)
        if tenant is not None:
            await own_links(service, tenant, jobs)
        with continue_trace(request.headers):
            stored = await service.app.enqueue_many(jobs)
        if tenant is not None and any(j.tenant != tenant for j in stored):
            raise _key_taken()  # a race with the check in own_links: rare, and shows nothing

        def answer() -> Response:
            body = [accepted(j) for j in stored] if many else accepted(stored[0])
            return JSONResponse(body, status_code=status(stored))

        return await off_loop(answer, heavy=len(stored) > OFF_LOOP_JOBS)


async def read_jobs(service: Service, queue: str, request: Request) -> tuple[list[NewJob], bool]:
    """The jobs a request to ``queue`` asks to store, and whether the body was a list: every
    check of the route but the enqueue itself (ApiError or InvalidPayload when one fails)."""
    token = service.authorize(request, Scope.ENQUEUE)
    app = service.app
    if queue not in app.queues:
        raise ApiError(
            404,
            "unknown_queue",
            f"queue {queue!r} is not declared by this app; declared queues: "
            f"{', '.join(sorted(app.queues)) or 'none'}",
        )
    service.admit_token(token)
    raw = await service.read_json_body(
        request, service.settings.max_body_bytes, json_only=service.json_only
    )
    tenant = None if token is None else token.tenant
    return await off_loop(
        lambda: jobs_of(queue, parse_json(raw), tenant=tenant), heavy=len(raw) > OFF_LOOP_BYTES
    )


async def own_links(service: Service, tenant: str, jobs: list[NewJob]) -> None:
    """Refuse, as if they did not exist, a run or parent jobs of another tenant: a token bound
    to ``tenant`` may neither join another tenant's run nor wait on its jobs (their outcome
    would tell it about them); and refuse (409 ``key_taken``) a key another tenant's job holds
    on the queue, before anything is stored."""
    runs = {job.run_id for job in jobs if job.run_id is not None}
    for run_id in sorted(runs):
        try:
            await service.own_run(tenant, run_id)
        except RunNotFound:
            raise UnknownRun(run_id) from None
    parents = sorted({parent for job in jobs for parent in job.after})
    foreign = []
    for parent in parents:
        try:
            await service.own_job(tenant, parent)
        except JobNotFound:
            foreign.append(parent)
    if foreign:
        raise UnknownParent(foreign)
    for job in jobs:  # checked before storing: a list is stored all or nothing
        if job.key is not None:
            try:
                held = await service.app.get_job(job.queue, key=job.key)
            except JobNotFound:
                continue
            if held.tenant != tenant:
                raise _key_taken()


def _key_taken() -> ApiError:
    return ApiError(
        409,
        "key_taken",
        "a job with this key already exists on this queue and is not yours; use another key",
    )


def jobs_of(queue: str, body: JSON, *, tenant: str | None = None) -> tuple[list[NewJob], bool]:
    """The jobs of a ``POST /v1/queues/{queue}/jobs`` body, and whether it was a list.
    ``tenant``: the caller's token is bound to it (its jobs get it; another one is 403)."""
    if isinstance(body, list):
        if not body:
            raise InvalidPayload("the list of jobs is empty; send at least one job")
        items = [_job_in(item, f"[{i}].", tenant) for i, item in enumerate(body)]
    else:
        items = [_job_in(body, "", tenant)]
    try:
        jobs = [_new_job(queue, item) for item in items]
    except RecursionError:
        raise InvalidPayload("the payload is nested too deeply") from None
    return jobs, isinstance(body, list)


def _new_job(queue: str, item: JobIn) -> NewJob:
    return NewJob.create(
        queue,
        item.payload,
        key=item.key,
        priority=item.priority,
        run_at=item.run_at,
        delay=item.delay_s,
        max_attempts=item.max_attempts,
        timeout_s=item.timeout_s,
        run=item.run,
        after=item.after,
        after_policy=item.after_policy,
        webhook=item.webhook,
        tenant=item.tenant,
        rate_key=item.rate_key,
        concurrency_key=item.concurrency_key,
        fair_key=item.fair_key,
        parsed=True,
    )


def _job_in(item: JSON, where: str, tenant: str | None) -> JobIn:
    if not isinstance(item, dict):
        raise InvalidPayload(
            f"{where or 'the body'} must be a JSON object such as "
            '{"payload": {...}}, or a list of them'
        )
    try:
        job = JobIn.model_validate(item)
    except ValidationError as exc:
        raise invalid_payload(exc, where) from None
    if tenant is None or job.tenant == tenant:
        return job
    if job.tenant is None:
        return job.model_copy(update={"tenant": tenant})
    raise ApiError(
        403,
        "forbidden",
        f"{where}tenant: this API token is bound to tenant {tenant!r}; it cannot enqueue jobs "
        f"of tenant {job.tenant!r} (leave tenant out, or give {tenant!r})",
    )
