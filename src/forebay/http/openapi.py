"""How the routes are described in the OpenAPI document (``/docs``, ``/openapi.json``).

The JSON routes read their bodies themselves (size limit first, then parsing), so FastAPI does
not see a body parameter: :func:`json_body` documents it. Every route names the error answers
it can give (:data:`ERRORS` and the others, in the shape of :class:`~forebay.http.models.ErrorOut`),
and :func:`document_security` declares the bearer tokens when the service has some (the checks
themselves happen in the routes).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from forebay.http.models import ErrorOut

__all__ = [
    "ERRORS",
    "INTAKE_ERRORS",
    "NOT_JSON",
    "document_security",
    "flat_schema",
    "json_body",
]

Responses = dict[int | str, dict[str, object]]

ERRORS: Responses = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "Malformed JSON or an invalid field",
        401: "Missing or unknown credentials",
        403: "The credentials do not allow this",
        404: "Unknown queue, source or job",
        503: "The backend is unreachable; retry after Retry-After",
    }.items()
}
"""The errors every ``/v1`` route may answer."""
NOT_JSON: Responses = {
    415: {"model": ErrorOut, "description": "Without API tokens: the body is not sent as JSON"}
}
"""What a JSON route answers, without tokens, to a body not sent as JSON."""
INTAKE_ERRORS: Responses = {
    **ERRORS,
    **NOT_JSON,
    413: {"model": ErrorOut, "description": "The body is over the limit"},
    429: {"model": ErrorOut, "description": "The queue is full; retry after Retry-After"},
}
"""The errors of the routes that store jobs."""


def flat_schema(model: type[BaseModel]) -> dict[str, object]:
    """The JSON schema of a request body model, which must need no ``$defs``."""
    schema = model.model_json_schema()
    assert "$defs" not in schema, "inline request schemas must be flat"
    return schema


def json_body(schema: dict[str, object], *, required: bool = True) -> dict[str, object]:
    """``openapi_extra`` documenting a JSON body the route reads itself (size-limited)."""
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }


def document_security(api: FastAPI, *, tokens: bool) -> None:
    """Build the OpenAPI document once, with the bearer scheme on ``/v1`` when ``tokens``."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = get_openapi(
            title=api.title,
            version=api.version,
            summary=api.summary,
            routes=api.routes,
        )
        if tokens:
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
