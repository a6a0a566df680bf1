"""Reading request bodies: never more than the limit, and JSON or a clear 400.

A client that hangs up before its whole body arrived (or, under ``forebay serve``, whose body
did not arrive in time) makes :func:`read_body` raise starlette's ``ClientDisconnect``; the
error handlers answer it (see :mod:`forebay.http.errors`).
"""

from __future__ import annotations

from starlette.requests import Request

from forebay import jsonio
from forebay.http.errors import ApiError
from forebay.job import JSON

__all__ = ["parse_json", "read_body"]


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the body is larger than this endpoint's limit of {limit} bytes; "
        "send smaller batches (nothing was stored)",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it would exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a
    streamed (chunked) body is refused at the first chunk that would cross the limit, so at
    most ``limit`` bytes are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise _too_large(limit)
        body += chunk
    return bytes(body)


def parse_json(body: bytes, *, empty: JSON | None = None, allow_empty: bool = False) -> JSON:
    """Parse ``body`` as JSON, or raise ApiError 400 ``malformed_json`` saying where it breaks."""
    if not body.strip():
        if allow_empty:
            return empty
        raise ApiError(400, "malformed_json", "the body is empty; send a JSON document")
    try:
        value: JSON = jsonio.loads(body)
    except RecursionError:
        raise ApiError(400, "malformed_json", "the JSON is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not UTF-8 text: {exc}") from None
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    return value
