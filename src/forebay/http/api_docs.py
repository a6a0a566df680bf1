"""``/docs``: Swagger UI over ``/openapi.json``, with its script and style served by this app
from the ``swagger-ui-bundle-v2`` package, so the page works where no CDN can be reached (an
air-gapped host, a laptop offline). ``/redoc`` is not served: it would need a CDN."""

from __future__ import annotations

import functools

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

__all__ = ["ASSET_PATH", "mount_api_docs"]

ASSET_PATH = "/docs/assets"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_CACHE = "public, max-age=86400"


@functools.cache
def _asset(name: str) -> bytes:
    """One file of the Swagger UI distribution, read from the package once."""
    return bytes(swagger_ui_path.joinpath(name).read_bytes())


def _url(name: str) -> str:
    # The distribution's folder names its version: a new one is a new URL, never a stale cache.
    return f"{ASSET_PATH}/{name}?v={swagger_ui_path.name}"


def mount_api_docs(api: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` and its assets under :data:`ASSET_PATH`."""

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title=f"{api.title} API",
            swagger_js_url=_url("swagger-ui-bundle.js"),
            swagger_css_url=_url("swagger-ui.css"),
            swagger_favicon_url=_url("favicon-32x32.png"),
        )

    @api.api_route(ASSET_PATH + "/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_asset(name: str, request: Request, v: str | None = None) -> Response:
        # ``v``: the distribution's version (see _url), which only makes the URL new
        media_type = _MEDIA_TYPES.get(name)
        if media_type is None:
            raise HTTPException(404)
        headers = {"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"}
        return Response(_asset(name), media_type=media_type, headers=headers)
