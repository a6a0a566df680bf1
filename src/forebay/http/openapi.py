"""How the routes are described in the OpenAPI document (``/docs``, ``/openapi.json``).

The JSON routes read their bodies themselves (size limit first, then parsing), so FastAPI does
not see a body parameter: :func:`json_body` documents it. Every route names the error answers
it can give (:data:`ERRORS` and the others, in the shape of :class:`~forebay.http.models.ErrorOut`),
and :func:`document_security` declares the bearer tokens when the service has some (the checks
themselves happen in the routes). :func:`document_payloads` gives each queue with a payload
model its own path, ``POST /v1/queues/<queue>/jobs``, whose body shows that model's schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from forebay.http.models import ErrorOut

__all__ = [
    "ERRORS",
    "INTAKE_ERRORS",
    "NOT_JSON",
    "document_payloads",
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
    422: {
        "model": ErrorOut,
        "description": "The queue's payload model refuses a payload (field errors in details)",
    },
    429: {
        "model": ErrorOut,
        "description": "The queue is full (queue_full), the job's tenant at its quota "
        "(tenant_quota_full), or the token or source over its intake rate (rate_limited, "
        "with RateLimit and RateLimit-Policy); retry after Retry-After",
    },
    409: {
        "model": ErrorOut,
        "description": "A run refuses the job (run_sealed), or, for a token bound to a "
        "tenant, the job's key is held by another tenant's job (key_taken)",
    },
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


def document_payloads(api: FastAPI, path: str, models: Mapping[str, type[BaseModel]]) -> None:
    """Add to the OpenAPI document, for each queue with a payload model, a copy of the
    ``POST`` operation of ``path`` (whose ``{queue}`` it fills in) with the model as the jobs'
    ``payload``, and the model's schema under ``components/schemas``. Call it after
    :func:`document_security`; the document is still built once."""
    if not models:
        return
    build = api.openapi
    documented: list[bool] = []

    def openapi() -> dict[str, Any]:
        schema = build()
        if not documented:
            add_queue_paths(schema, path, models)
            documented.append(True)
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def add_queue_paths(
    schema: dict[str, Any], path: str, models: Mapping[str, type[BaseModel]]
) -> None:
    """Add the per-queue paths :func:`document_payloads` describes to ``schema``."""
    generic = schema["paths"][path]["post"]
    refs = _model_refs(schema.setdefault("components", {}).setdefault("schemas", {}), models)
    paths: dict[str, Any] = {}
    for name, operations in schema["paths"].items():
        paths[name] = operations
        if name != path:
            continue
        for queue, model in sorted(models.items()):
            paths[path.replace("{queue}", queue)] = {
                "post": _queue_operation(generic, queue, model, refs[model])
            }
    schema["paths"] = paths


def _model_refs(
    components: dict[str, Any], models: Mapping[str, type[BaseModel]]
) -> dict[type[BaseModel], dict[str, Any]]:
    """Put the models' schemas in ``components`` (prefixed when a name is taken); their refs."""
    from pydantic.json_schema import models_json_schema

    unique = list(dict.fromkeys(models.values()))
    for prefix in ("", "payload-"):
        keys, top = models_json_schema(
            [(m, "validation") for m in unique],
            ref_template=f"#/components/schemas/{prefix}{{model}}",
        )
        defs: dict[str, Any] = top.get("$defs", {})
        if prefix or not any(components.get(n, d) != d for n, d in defs.items()):
            break
    for name, definition in defs.items():
        components[f"{prefix}{name}"] = definition
    return {m: keys[(m, "validation")] for m in unique}


def _queue_operation(
    generic: dict[str, Any], queue: str, model: type[BaseModel], ref: dict[str, Any]
) -> dict[str, Any]:
    operation = copy.deepcopy(generic)
    operation["operationId"] = f"enqueue_jobs_{re.sub(r'[^A-Za-z0-9_]', '_', queue)}"
    operation["summary"] = f"Enqueue on {queue}: payloads are {model.__name__}"
    operation["parameters"] = [
        p for p in operation.get("parameters", []) if p.get("name") != "queue"
    ]
    if not operation["parameters"]:
        del operation["parameters"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    payload = {**ref, "description": f"The payload model {model.__name__}: job.payload."}
    for variant in body["oneOf"]:
        job = variant.get("items", variant)
        job["properties"]["payload"] = payload
    return operation
