"""Runs (docs/runs.md): ``GET /v1/runs`` and ``GET /v1/runs/{run_id}`` read them with their
counts (``read`` scope); ``POST /v1/runs`` starts one and ``POST /v1/runs/{run_id}/seal`` seals
it (``enqueue`` scope: the producer that enqueues a run's jobs is the one that starts and seals
it). Jobs join a run with ``"run": "<id>"`` in the body of ``POST /v1/queues/{queue}/jobs``.

A start with the ``key`` of a stored run answers 200 with that run instead of 201, as the intake
does for a job's key, so a producer may retry it safely. Sealing is idempotent too: a sealed or
completed run answers 200 unchanged.

A token bound to a tenant starts that tenant's runs (another ``tenant`` in the body is 403) and
lists, reads and seals only them: another tenant's run by id answers 404 ``run_not_found``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.http.body import parse_json
from forebay.http.errors import ApiError, invalid_payload
from forebay.http.models import LimitParam, RunIn, RunOut, RunsPage
from forebay.http.openapi import ERRORS, NOT_JSON, flat_schema, json_body
from forebay.http.service import Service
from forebay.http.settings import Scope
from forebay.runs import RunState

__all__ = ["add_routes"]

_RUN_ID = Path(
    min_length=1,
    max_length=256,
    pattern=r"^[A-Za-z0-9_.:-]+$",
    description="The run's id, as answered by POST /v1/runs.",
)
RunBeforeIdParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Only runs started before this one: the next_before_id of the last page.",
    ),
]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add the routes of ``/v1/runs``."""
    app = service.app

    @api.get(
        "/v1/runs",
        tags=["runs"],
        summary="Runs with their counts, newest first, by state; page with before_id",
        response_model=RunsPage,
        responses=ERRORS,
    )
    async def list_runs(
        request: Request,
        state: Annotated[RunState | None, Query()] = None,
        before_id: RunBeforeIdParam = None,
        limit: LimitParam = 100,
    ) -> Response:
        tenant = service.tenant(request, Scope.READ)
        runs = await app.list_runs(state=state, limit=limit, before_id=before_id, tenant=tenant)
        next_id = runs[-1].id if len(runs) == limit else None
        return JSONResponse({"runs": [r.to_dict() for r in runs], "next_before_id": next_id})

    @api.get(
        "/v1/runs/{run_id}",
        tags=["runs"],
        summary="A run: its state and its counts of jobs per state",
        response_model=RunOut,
        responses=ERRORS,
    )
    async def get_run(request: Request, run_id: str = _RUN_ID) -> Response:
        tenant = service.tenant(request, Scope.READ)
        return JSONResponse((await service.own_run(tenant, run_id)).to_dict())

    @api.post(
        "/v1/runs",
        tags=["runs"],
        summary="Start an open run (a stored run's key: that run, 200)",
        status_code=201,
        response_model=RunOut,
        responses={
            200: {"model": RunOut, "description": "A run with this key was stored: that run"},
            **ERRORS,
            **NOT_JSON,
        },
        openapi_extra=json_body(flat_schema(RunIn), required=False),
    )
    async def start_run(request: Request) -> Response:
        """Jobs join it with ``"run": "<id>"``; seal it once every top-level job is enqueued.
        It completes when sealed and every job in it finished: then ``on_complete`` gets one
        job with its summary and ``webhook`` one ``run.completed`` delivery, exactly once."""
        tenant = service.tenant(request, Scope.ENQUEUE)
        given = await _run_in(service, request)
        if tenant is not None and given.tenant not in (None, tenant):
            raise ApiError(
                403,
                "forbidden",
                f"tenant: this API token is bound to tenant {tenant!r}; it cannot start runs "
                f"of tenant {given.tenant!r} (leave tenant out, or give {tenant!r})",
            )
        run = await app.start_run(
            name=given.name,
            key=given.key,
            meta=given.meta,
            on_complete=given.on_complete,
            webhook=given.webhook,
            tenant=tenant or given.tenant,
        )
        if tenant is not None and run.tenant != tenant:  # the key of another tenant's run
            raise ApiError(
                409,
                "key_taken",
                "a run with this key already exists and is not yours; use another key",
            )
        return JSONResponse(run.to_dict(), status_code=201 if run.created else 200)

    @api.post(
        "/v1/runs/{run_id}/seal",
        tags=["runs"],
        summary="Seal a run: no more jobs join from outside; it completes once all finished",
        response_model=RunOut,
        responses=ERRORS,
    )
    async def seal_run(request: Request, run_id: str = _RUN_ID) -> Response:
        """The jobs its running jobs enqueue still join. A run whose jobs all finished (an
        empty one too) completes at once. A sealed or completed run answers unchanged."""
        await service.own_run(service.tenant(request, Scope.ENQUEUE), run_id)
        return JSONResponse((await app.seal_run(run_id)).to_dict())


async def _run_in(service: Service, request: Request) -> RunIn:
    raw = await service.read_json_body(
        request, service.settings.max_body_bytes, json_only=service.json_only
    )
    body = parse_json(raw, allow_empty=True)
    try:
        return RunIn.model_validate(body if body is not None else {})
    except ValidationError as exc:
        raise invalid_payload(exc) from None
