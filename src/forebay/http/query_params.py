"""Unknown query parameters are refused, on every route of the API, the same way.

FastAPI ignores a query parameter a route does not declare, so a misspelt or unsupported filter
(``GET /v1/jobs?key=h1`` before that route took ``key``) would answer something else than was
asked, silently. :class:`CheckedQueryRoute` is the route class of the whole app
(:func:`~forebay.http.api.create_app` sets it before any route is added): before a route's
endpoint runs, each query parameter must be one the route declares, else the answer is 400
``invalid_request`` naming the unknown ones and the ones the route takes.

Only FastAPI's own pages (``/docs``, ``/openapi.json``, ...) are not API routes, and they
keep FastAPI's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from forebay.http.errors import ApiError

__all__ = ["CheckedQueryRoute", "declared_query_params"]


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """The names of the query parameters ``route`` declares (its dependencies' too)."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        for field in dependant.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):  # parameters' model
                names.update(f.alias or name for name, f in model.model_fields.items())
            else:
                names.add(field.alias)
    return frozenset(names)


class CheckedQueryRoute(APIRoute):
    """An API route that answers 400 to a query parameter it does not declare."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        allowed = declared_query_params(self)
        path = self.path

        async def checked(request: Request) -> Response:
            query = request.query_params
            if query and any(name not in allowed for name in query):
                raise ApiError(400, "invalid_request", _refusal(query.keys(), allowed, path))
            return await handle(request)

        return checked


def _refusal(given: Iterable[str], allowed: frozenset[str], path: str) -> str:
    unknown = sorted({name for name in given if name not in allowed})
    plural = "s" if len(unknown) > 1 else ""
    takes = ", ".join(sorted(allowed)) if allowed else "none"
    return f"unknown query parameter{plural} {', '.join(unknown)}: {path} takes {takes}"
