"""The web dashboard: a static page at ``/`` that reads and acts through the ``/v1`` API.

The page (``index.html``, ``app.js``, ``style.css`` next to this module) holds no data, so it is
served without a token; its script calls the API from the browser, with the token the user types
(kept in the tab's ``sessionStorage``) when the service has API tokens. None of its routes appear
in the OpenAPI schema.

The page is served with ``Cache-Control: no-cache`` and a Content-Security-Policy that allows
only this origin's script and style; it names its assets with a content hash (``?v=``), so they
can be cached for a day without a new version being missed.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

__all__ = ["ASSET_PATH", "mount_dashboard"]

ASSET_PATH = "/dashboard"

_MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSET_CACHE = "public, max-age=86400"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class _Files:
    page: bytes
    assets: dict[str, _Asset]


@functools.cache
def _files() -> _Files:
    """The page and its assets, read from the package once (on the first request)."""
    folder = files(__name__)
    assets: dict[str, _Asset] = {}
    for name, media_type in _MEDIA_TYPES.items():
        body = folder.joinpath(name).read_bytes()
        assets[name] = _Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    version = hashlib.sha256("".join(a.etag for a in assets.values()).encode()).hexdigest()[:12]
    page = folder.joinpath("index.html").read_bytes().replace(b"__VERSION__", version.encode())
    return _Files(page, assets)


def mount_dashboard(api: FastAPI) -> None:
    """Serve the dashboard page at ``/`` and its assets under :data:`ASSET_PATH`."""

    # HEAD too: uptime checks and link previews probe the page that way.
    @api.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard() -> Response:
        return Response(_files().page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @api.api_route(ASSET_PATH + "/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard_asset(name: str, request: Request, v: str | None = None) -> Response:
        # v: the content hash the page names its assets with (ignored here: see the docstring)
        asset = _files().assets.get(name)
        if asset is None:
            raise HTTPException(404)
        headers = {
            "Cache-Control": _ASSET_CACHE,
            "ETag": asset.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
