"""``POST /v1/sources/{source}``: a webhook for a source the app declares
(:class:`~forebay.sources.Source`), turned into jobs and answered once they are durable.

A source authenticates with its own header (a shared secret, or an HMAC signature of the body),
never with the API tokens: a missing header is a 401, a wrong one a 403. A credential that needs
no body is checked before any of the body is read; a signature, once the body is in (within the
source's own size limit). A source with its own secret is no CSRF target (a page cannot send the
header), so its senders keep whatever content type they send.

A source declared with a ``rate_limit`` accepts that many requests per period (each service
instance its own count); once the sender is authenticated, a request past it is answered 429
``rate_limited`` with ``Retry-After`` and nothing is stored (see :mod:`.intake_limits`). Jobs from
sources belong to no tenant: the API tokens' tenants do not reach them.

With tracing on, the enqueue continues the trace of the sender's ``traceparent`` header (or
starts one): see :mod:`forebay.tracing`.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forebay.errors import InvalidPayload
from forebay.http.body import parse_json
from forebay.http.errors import ApiError
from forebay.http.models import SourceAccepted
from forebay.http.openapi import INTAKE_ERRORS, json_body
from forebay.http.responses import OFF_LOOP_BYTES, OFF_LOOP_JOBS, accepted, off_loop, status
from forebay.http.service import Service
from forebay.job import NewJob
from forebay.tracing import continue_trace

__all__ = ["add_routes"]


def add_routes(api: FastAPI, service: Service) -> None:
    """Add ``POST /v1/sources/{source}``."""
    app = service.app

    @api.post(
        "/v1/sources/{source}",
        tags=["intake"],
        summary="Receive a webhook for a declared source",
        status_code=201,
        response_model=SourceAccepted,
        responses={
            200: {"model": SourceAccepted, "description": "Nothing new: duplicates or no job"},
            **INTAKE_ERRORS,
        },
        openapi_extra={
            **json_body({}),
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
            _refuse(declared.auth.header if declared.auth else "", headers)
        raw = await service.read_json_body(
            request, declared.max_body_bytes, json_only=service.json_only and declared.auth is None
        )
        if not declared.authenticate(headers, raw):
            header = declared.auth.header if declared.auth else ""
            raise ApiError(403, "forbidden", f"the {header} signature does not match the body")
        service.admit_source(declared)

        def to_jobs() -> list[NewJob]:
            try:
                return declared.jobs(parse_json(raw))
            except RecursionError:
                raise InvalidPayload("the payload is nested too deeply") from None

        jobs = await off_loop(to_jobs, heavy=len(raw) > OFF_LOOP_BYTES)
        with continue_trace(request.headers):
            stored = await app.enqueue_many(jobs) if jobs else []

        def answer() -> Response:
            body = {"source": source, "jobs": [accepted(j) for j in stored]}
            return JSONResponse(body, status_code=status(stored))

        return await off_loop(answer, heavy=len(stored) > OFF_LOOP_JOBS)


def _refuse(header: str, headers: Headers) -> None:
    if header.lower() not in headers:
        raise ApiError(401, "unauthorized", f"missing the {header} header this source requires")
    raise ApiError(403, "forbidden", f"the {header} header does not match this source's secret")
