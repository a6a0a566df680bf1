"""How errors become HTTP answers: one JSON shape, one status per kind of mistake.

Every error answer is ``{"error": {"type": ..., "message": ...}}`` (plus ``details`` for field
errors), and nothing was enqueued:

======  ==========================  ==================================================
status  ``error.type``              when
======  ==========================  ==================================================
400     ``malformed_json``          the body is not JSON
400     ``invalid_payload``         a field is wrong (or a source refused the body)
400     ``invalid_request``         a path or query parameter is wrong, or unknown to the route
400     ``unknown_run``             a job's ``run`` names no run (or a pruned one)
400     ``unknown_parent``          a job's ``after`` names a job that does not exist
401     ``unauthorized``            credentials missing, malformed or unknown
403     ``forbidden``               token lacks the scope; a source's secret or signature is wrong
403     ``host_not_allowed``        no tokens, and ``Host`` does not name this machine
403     ``origin_not_allowed``      no tokens, and a change was asked from another site's page
404     ``unknown_queue``           the app declares no such queue
404     ``unknown_source``          the app declares no such source
404     ``job_not_found``           no such job (or it was pruned)
404     ``run_not_found``           no such run (or it was pruned)
404     ``not_found``               no such endpoint
405     ``method_not_allowed``      wrong method for the endpoint
408     ``body_timeout``            the body did not arrive in time (``forebay serve``; the
                                    connection is closed)
409     ``job_not_cancellable``     the job is finished (completed or dead): only queued and
                                    running jobs can be cancelled
409     ``job_not_queued``          run-now of a job that is not queued (running, finished)
409     ``run_sealed``              a job asked to join a sealed (or completed) run
409     ``key_taken``               a token bound to a tenant gave a job's or run's key that
                                    another tenant's job or run holds (nothing of it is shown)
413     ``body_too_large``          the body is over the limit (it was not read further)
415     ``unsupported_media_type``  no tokens, and a JSON route's body is not sent as JSON
422     ``payload_validation``      the queue's payload model refuses a payload; ``details``
                                    holds one entry per field error (``job``, ``loc``,
                                    ``message``, ``type``)
429     ``queue_full``              the queue is at ``max_depth``; see ``Retry-After``
429     ``tenant_quota_full``       the job's tenant holds its quota of unfinished jobs;
                                    ``error.tenant`` and ``error.max_depth`` name them;
                                    see ``Retry-After``
429     ``rate_limited``            an API token or a source is over its intake rate; see
                                    ``Retry-After``, ``RateLimit`` and ``RateLimit-Policy``
503     ``backend_unavailable``     the backend cannot be reached; see ``Retry-After``
500     ``internal_error``          a bug: the traceback is in the service's log
499     ``client_disconnected``     the client hung up before its body arrived; nobody
                                    reads this answer, it is what metrics count
======  ==========================  ==================================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from forebay.errors import (
    BackendError,
    ConfigError,
    ForebayError,
    InvalidPayload,
    JobNotFound,
    JobStateConflict,
    PayloadValidationError,
    QueueFull,
    RunNotFound,
    RunSealed,
    TenantQuotaFull,
    UnknownParent,
    UnknownRun,
)

__all__ = [
    "BODY_TIMEOUT_S",
    "ApiError",
    "error_response",
    "field_details",
    "install_error_handlers",
    "invalid_payload",
]

log = logging.getLogger("forebay.service")

_STARLETTE_TYPES = {404: "not_found", 405: "method_not_allowed"}

BODY_TIMEOUT_S = "forebay.body_timeout_s"
"""Scope key ``forebay serve`` sets (to its ``body_timeout_s``) on a request whose body did not
arrive in time, before it answers 408 and closes the connection (see
:mod:`forebay.http.connections`): the app, whose read of the body then fails as if the client
had gone, counts and logs a 408."""


class ApiError(Exception):
    """An error answer decided at the HTTP edge (the service's own refusals)."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int,
    type: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: Sequence[Mapping[str, object]] | None = None,
    extra: Mapping[str, object] | None = None,
) -> JSONResponse:
    """``{"error": {"type", "message", "details"?, **extra}}`` with ``status``."""
    error: dict[str, object] = {"type": type, "message": message, **(extra or {})}
    if details:
        error["details"] = list(details)
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def invalid_payload(exc: ValidationError, where: str = "") -> InvalidPayload:
    """The 400 for a body that failed validation: its first error, and where it is."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return InvalidPayload(f"{where}{field or 'body'}: {first['msg']}")


_KINDS: dict[type[ForebayError], tuple[int, str]] = {
    UnknownRun: (400, "unknown_run"),
    UnknownParent: (400, "unknown_parent"),
    RunSealed: (409, "run_sealed"),
    JobNotFound: (404, "job_not_found"),
    RunNotFound: (404, "run_not_found"),
    JobStateConflict: (409, "job_not_queued"),
}
"""The status and ``error.type`` of core errors (UnknownRun and UnknownParent before their
base InvalidPayload, which answers 400 ``invalid_payload``)."""


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def forebay_error_response(exc: ForebayError, backend_retry_after_s: float) -> JSONResponse:
    """The answer for an error raised by the core (the backend, enqueue validation...)."""
    if isinstance(exc, TenantQuotaFull):
        return error_response(
            429,
            "tenant_quota_full",
            str(exc),
            headers=retry_after(exc.retry_after_s),
            extra={"tenant": exc.tenant, "max_depth": exc.max_depth},
        )
    if isinstance(exc, QueueFull):
        return error_response(429, "queue_full", str(exc), headers=retry_after(exc.retry_after_s))
    if isinstance(exc, BackendError):
        log.warning("backend error, answering 503: %s", exc)
        wait = getattr(exc, "retry_after_s", backend_retry_after_s)
        return error_response(
            503,
            "backend_unavailable",
            f"the job store is unavailable; nothing was stored, retry later ({exc})",
            headers=retry_after(max(wait, backend_retry_after_s)),
        )
    if isinstance(exc, PayloadValidationError):
        return error_response(422, "payload_validation", str(exc), details=field_details(exc))
    for kind, (code, name) in _KINDS.items():
        if isinstance(exc, kind):
            return error_response(code, name, str(exc))
    if isinstance(exc, InvalidPayload):
        return error_response(400, "invalid_payload", str(exc))
    if isinstance(exc, ConfigError):
        log.error("configuration error while serving a request: %s", exc)
        return error_response(500, "config_error", str(exc))
    log.error("unexpected forebay error while serving a request", exc_info=exc)
    return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")


def field_details(exc: PayloadValidationError) -> list[dict[str, object]]:
    """The 422's ``details``: per field error, the job's position in the request's jobs (0 for
    one job), where in its payload (``loc``), what is wrong and pydantic's error type."""
    details: list[dict[str, object]] = []
    for error in exc.errors:
        loc = error.get("loc")
        details.append(
            {
                "job": exc.index,
                "loc": [str(p) for p in loc] if isinstance(loc, list) else [],
                "message": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return details


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "message": str(err.get("msg", ""))}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI, *, backend_retry_after_s: float) -> None:
    """Answer every error in the shape above (FastAPI's defaults differ)."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.type, exc.message, headers=exc.headers)

    async def on_forebay_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ForebayError)
        return forebay_error_response(exc, backend_retry_after_s)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = _validation_details(exc)
        first = details[0] if details else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"][1:]) or "request"
        return error_response(
            400, "invalid_request", f"{where}: {first['message']}", details=details
        )

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = _STARLETTE_TYPES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code in _STARLETTE_TYPES:
            message = (
                f"{message}: no endpoint {request.method} {request.url.path}; "
                "the API is described at /docs"
            )
        return error_response(exc.status_code, kind, message, headers=exc.headers or None)

    async def on_client_gone(request: Request, exc: Exception) -> JSONResponse:
        # The sender's doing, not a bug: no traceback. The answer reaches no one (uvicorn drops
        # it), but it passes the intake metrics, which count it.
        timeout_s = request.scope.get(BODY_TIMEOUT_S)
        if timeout_s is not None:
            log.info(
                "the body of %s %s did not arrive within %g s; answered 408, nothing was stored",
                request.method,
                request.url.path,
                timeout_s,
            )
            return error_response(408, "body_timeout", "the body did not arrive in time")
        log.info(
            "client disconnected before its whole body arrived: %s %s; nothing was stored",
            request.method,
            request.url.path,
        )
        return error_response(
            499, "client_disconnected", "the client disconnected before its body arrived"
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            500, "internal_error", "internal error; the traceback is in the service's log"
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ForebayError, on_forebay_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(Exception, on_unexpected)
