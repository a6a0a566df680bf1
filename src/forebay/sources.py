"""Sources: named webhook endpoints that turn one HTTP request into jobs.

Why the seam is here: every sender (Label Studio, GitHub, a form, a script) authenticates,
shapes and repeats its deliveries differently, yet forebay's promise after the body is read is
the same for all of them. A :class:`Source` holds exactly the per-sender parts — how the
request is authenticated, how one body becomes one or more job payloads (``split``), and which
key makes a repeated delivery harmless (``key``) — and the service does the rest: size limit,
JSON parsing, one durable enqueue of all the request's jobs, the answer.

Declare one on the app and a handler for its queue::

    app.source(
        "labelstudio",
        queue="labelstudio",
        auth=SharedSecret(header="X-Forebay-Secret", secret=os.environ["LS_SECRET"]),
        key=lambda payload: f"{payload['annotation']['id']}:{payload['annotation']['updated_at']}",
    )

    @app.handler("labelstudio")
    async def ingest(job): ...

Senders then ``POST /v1/sources/labelstudio``. A ``split`` or ``key`` function may raise
:class:`~forebay.InvalidPayload` to reject a body (the sender gets 400 with the message).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, TypeAlias

from forebay.errors import ConfigError, InvalidPayload
from forebay.flow import Rate
from forebay.job import JSON, NewJob, validate_queue_name

__all__ = [
    "HmacSignature",
    "KeyFunction",
    "SharedSecret",
    "Source",
    "SourceAuth",
    "SplitFunction",
]

SplitFunction: TypeAlias = Callable[[JSON], Iterable[JSON]]
"""Turns one parsed request body into the payloads of one or more jobs."""
KeyFunction: TypeAlias = Callable[[JSON], "str | None"]
"""Gives a job payload its idempotency key (None: no dedupe for that job)."""

# The logger of the HTTP service, which reads the bodies (its name is what users configure).
log = logging.getLogger("forebay.service")

RESERVED_SOURCE_NAMES = frozenset({"api", "unknown"})
"""Used as ``source`` label values in metrics for the jobs API and for unknown names."""


class SourceAuth(Protocol):
    """How a source authenticates a request: one header, checked in constant time."""

    @property
    def header(self) -> str:
        """The request header that carries the credential."""

    signs_body: ClassVar[bool]
    """True when :meth:`verify` needs the body (signatures); False lets the service check
    the credential before it reads any of the body."""

    def verify(self, value: str, body: bytes) -> bool:
        """True when ``value`` (the header's value) is a valid credential for ``body``."""


@dataclass(frozen=True, slots=True)
class SharedSecret:
    """The request must carry ``header: secret`` exactly (e.g. a custom webhook header).

    For a bearer token, use ``SharedSecret(header="Authorization", secret="Bearer TOKEN")``.
    """

    header: str
    secret: str = field(repr=False)
    signs_body: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_header(self.header)
        if not self.secret:
            raise ConfigError("SharedSecret: the secret must not be empty")

    def verify(self, value: str, body: bytes) -> bool:
        return hmac.compare_digest(value.encode(), self.secret.encode())


@dataclass(frozen=True, slots=True)
class HmacSignature:
    """The request must carry ``header: <prefix><hex HMAC of the raw body>``.

    The defaults match the common ``X-Hub-Signature-256: sha256=<hex>`` convention::

        HmacSignature(header="X-Hub-Signature-256", secret=os.environ["WEBHOOK_SECRET"])
    """

    header: str
    secret: str = field(repr=False)
    algorithm: str = "sha256"
    prefix: str = "sha256="
    signs_body: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_header(self.header)
        if not self.secret:
            raise ConfigError("HmacSignature: the secret must not be empty")
        if self.algorithm not in hashlib.algorithms_available:
            raise ConfigError(f"HmacSignature: unknown hash algorithm {self.algorithm!r}")

    def sign(self, body: bytes) -> str:
        """The header value a sender would send for ``body`` (useful in tests and clients)."""
        digest = hmac.new(self.secret.encode(), body, self.algorithm).hexdigest()
        return f"{self.prefix}{digest}"

    def verify(self, value: str, body: bytes) -> bool:
        return hmac.compare_digest(value.strip().encode(), self.sign(body).encode())


def _check_header(header: str) -> None:
    if not header or not all(c.isalnum() or c in "-_" for c in header):
        raise ConfigError(f"header name {header!r} is not a valid HTTP header name")


def _one_job(body: JSON) -> Iterable[JSON]:
    return (body,)


@dataclass(frozen=True, slots=True)
class Source:
    """A named intake endpoint, ``POST /v1/sources/{name}``, feeding ``queue``.

    Made by :meth:`forebay.Forebay.source`. ``split`` defaults to "the body is one job";
    ``key`` defaults to no dedupe; ``auth`` None accepts unauthenticated requests (the
    service logs a warning at start-up). ``rate_limit``: the requests per period the service
    accepts for this source (each service instance its own bucket); past it, 429.
    """

    name: str
    queue: str
    auth: SourceAuth | None = None
    key: KeyFunction | None = None
    split: SplitFunction | None = None
    max_body_bytes: int = 1_048_576
    rate_limit: Rate | None = None

    def __post_init__(self) -> None:
        try:
            validate_queue_name(self.name)
            validate_queue_name(self.queue)
        except InvalidPayload as exc:
            raise ConfigError(f"source {self.name!r}: {exc}") from None
        if self.name in RESERVED_SOURCE_NAMES:
            raise ConfigError(
                f"source name {self.name!r} is reserved (metrics use it); choose another"
            )
        if self.max_body_bytes < 1:
            raise ConfigError(f"source {self.name!r}: max_body_bytes must be positive")
        if self.rate_limit is not None and not isinstance(self.rate_limit, Rate):
            raise ConfigError(f"source {self.name!r}: rate_limit must be a Rate (Rate.parse)")

    def authenticate(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        """True if the request is allowed. ``body`` None: before reading it (header-only
        check; a signing ``auth`` then only checks the header is present)."""
        if self.auth is None:
            return True
        value = headers.get(self.auth.header)
        if value is None:
            return False
        if body is None:
            return self.auth.signs_body or self.auth.verify(value, b"")
        return not self.auth.signs_body or self.auth.verify(value, body)

    def jobs(self, body: JSON) -> list[NewJob]:
        """The jobs one parsed body becomes, or InvalidPayload saying why the body is refused.

        ``split``/``key`` may raise InvalidPayload themselves; a LookupError, TypeError,
        ValueError or AttributeError they raise (a field missing from the body) is refused the
        same way, with the traceback logged.
        """
        try:
            items = list((self.split or _one_job)(body))
            keys = [self.key(p) if self.key is not None else None for p in items]
        except InvalidPayload:
            raise
        except _SHAPE_ERRORS as exc:
            # The body lacks what split()/key() expect: the sender's mistake, not a crash.
            log.warning("source %s could not read a body", self.name, exc_info=True)
            raise InvalidPayload(
                f"source {self.name!r} could not read the body: {type(exc).__name__}: {exc}"
            ) from exc
        jobs = []
        for payload, key in zip(items, keys, strict=True):
            if key is not None and not isinstance(key, str):
                raise InvalidPayload(
                    f"source {self.name!r}: the key of a job must be a string, "
                    f"got {type(key).__name__}"
                )
            jobs.append(NewJob.create(self.queue, payload, key=key, parsed=True))
        return jobs


_SHAPE_ERRORS = (LookupError, TypeError, ValueError, AttributeError)
