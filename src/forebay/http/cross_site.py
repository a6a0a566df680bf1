"""What a web page may make the service do: the checks against DNS rebinding and CSRF, and CORS.

Without API tokens the service trusts whoever reaches its loopback address. A browser on the
same machine reaches it too, on behalf of any page it shows:

* **DNS rebinding**: a page at ``evil.example`` points its own name at 127.0.0.1; the browser
  then treats the service as that page's own origin, and the page reads what it likes
  (payloads, errors). Its requests still say ``Host: evil.example``, so :class:`BrowserGuard`
  answers only requests whose ``Host`` names this machine (``localhost``, a loopback address,
  or a name in ``allowed_hosts``).
* **Cross-site requests (CSRF)**: any page may *send* a POST to the service without asking
  first (no CORS preflight) when it looks like a form: ``text/plain``, form-encoded or
  multipart, with no custom header. :class:`BrowserGuard` refuses a request that changes
  something when its ``Origin`` is not the service's own (browsers send ``Origin`` with every
  such request; curl and scripts send none), and :func:`require_json` refuses a JSON route's
  body in any content type but JSON, which no page can send to another origin without a
  preflight that this service never grants.

With API tokens these checks are off (the token is the defence: a page cannot send it to
another origin without a preflight) and ``cors_origins`` is the one way to let a page call the
API: :func:`allow_cross_origin` answers those origins' preflights and nobody else's.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from forebay.http.errors import ApiError, error_response
from forebay.http.settings import is_loopback

__all__ = ["BrowserGuard", "allow_cross_origin", "is_json", "require_json"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_KNOWN_HOSTS_KEPT = 256  # Host values remembered as allowed (bounded: a client chooses them)


def host_name(host: str) -> str:
    """The name in a ``Host`` value, without port, brackets or trailing dot, in lowercase."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class BrowserGuard:
    """ASGI middleware of the token-less service: refuses a foreign ``Host`` (DNS rebinding)
    and a change requested from a foreign ``Origin`` (CSRF)."""

    def __init__(
        self, app: ASGIApp, *, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]
    ) -> None:
        self.app = app
        self._names = frozenset({"localhost", *allowed_hosts})
        self._origins = frozenset(allowed_origins)
        self._allowed_hosts: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                answer = error_response(refusal.status, refusal.type, refusal.message)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> ApiError | None:
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        if host is not None and host not in self._allowed_hosts and not self._host_ok(host):
            return ApiError(
                403,
                "host_not_allowed",
                "this service has no API tokens, so it answers only requests addressed to this "
                f"machine (localhost or a loopback address); the Host header says "
                f"{host.decode('latin-1')!r}. This is how a web page that points its own name "
                "at this address is kept out. Use http://127.0.0.1, list the name in "
                "FOREBAY_ALLOWED_HOSTS, or set FOREBAY_API_TOKENS",
            )
        if origin is not None and scope["method"] not in _SAFE_METHODS:
            text = origin.decode("latin-1").lower()
            if text not in self._origins and not _same_origin(text, host):
                return ApiError(
                    403,
                    "origin_not_allowed",
                    f"a page from {text} may not change anything here: without API tokens this "
                    "service takes changes only from its own pages and from clients that send "
                    "no Origin (curl, scripts, servers). List the origin in "
                    "FOREBAY_CORS_ORIGINS, or set FOREBAY_API_TOKENS",
                )
        return None

    def _host_ok(self, host: bytes) -> bool:
        name = host_name(host.decode("latin-1"))
        allowed = name in self._names or is_loopback(name)
        if allowed and len(self._allowed_hosts) < _KNOWN_HOSTS_KEPT:
            self._allowed_hosts.add(host)
        return allowed


def _same_origin(origin: str, host: bytes | None) -> bool:
    """True when ``origin`` (lowercase) is the service itself as the request addressed it."""
    if host is None or origin == "null":
        return False
    authority = origin.partition("://")[2]
    return authority == host.decode("latin-1").strip().lower()


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json``, with any parameters."""
    if content_type == "application/json":  # what nearly every client sends
        return True
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def require_json(headers: Headers) -> None:
    """Refuse (415) a body whose ``Content-Type`` is not JSON."""
    content_type = headers.get("content-type")
    if not is_json(content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as JSON, with Content-Type: application/json (got "
            f"{content_type or 'no Content-Type'}); without API tokens this service takes "
            "nothing else, so that no web page can post here as a form",
        )


def allow_cross_origin(api: FastAPI, origins: Iterable[str]) -> None:
    """Let pages from ``origins`` call the API (CORS); nothing is allowed unless listed."""
    api.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
