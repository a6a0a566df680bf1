"""The service's settings: one object, read in one place (``FOREBAY_*`` variables, then flags)
by :func:`forebay.settings.from_env`.

=====================  ===========================  =========================================
setting                environment variable         default
=====================  ===========================  =========================================
``host``               ``FOREBAY_HOST``             ``127.0.0.1``
``port``               ``FOREBAY_PORT``             ``8000``
``url``                ``FOREBAY_URL``              the app's own URL (``sqlite:///./forebay.db``)
``api_tokens``         ``FOREBAY_API_TOKENS``       none (allowed on a loopback host only)
``token_rate``         ``FOREBAY_TOKEN_RATE``       none: requests per period each API token may
                                                    send to ``POST /v1/queues/{queue}/jobs``
                                                    (``100/s``)
``workers``            ``FOREBAY_WORKERS``          ``true``: run the app's workers
``worker_processes``   ``FOREBAY_WORKER_PROCESSES`` ``0``: handlers in the service's process;
                                                    N: in N child processes
``max_body_bytes``     ``FOREBAY_MAX_BODY_BYTES``   1 MiB, for ``POST /v1/queues/{queue}/jobs``
``header_timeout_s``   ``FOREBAY_HEADER_TIMEOUT_S`` ``10``: a request's headers must arrive in it
``body_timeout_s``     ``FOREBAY_BODY_TIMEOUT_S``   ``60``: a request's body must arrive in it
``max_connections``    ``FOREBAY_MAX_CONNECTIONS``  ``1000`` (fewer if the open-file limit is low)
``allowed_hosts``      ``FOREBAY_ALLOWED_HOSTS``    none: without tokens, ``Host`` names beyond
                                                    localhost and loopback addresses
``cors_origins``       ``FOREBAY_CORS_ORIGINS``     none: web origins allowed to call the API
``log_format``         ``FOREBAY_LOG_FORMAT``       ``text`` (or ``json``)
``log_level``          ``FOREBAY_LOG_LEVEL``        ``info``
=====================  ===========================  =========================================

API tokens are comma-separated; each is ``TOKEN`` (every scope), ``TOKEN:SCOPE+SCOPE`` with
scopes ``enqueue`` (post jobs), ``read`` (jobs, queues, dead letters) and ``admin`` (cancel,
replay, purge; implies the other two), or ``TOKEN:SCOPES:TENANT`` (``TOKEN::TENANT``: every
scope), bound to one tenant, e.g.
``FOREBAY_API_TOKENS="s3cr3t-producer:enqueue,s3cr3t-ops:admin,s3cr3t-acme:enqueue+read:acme"``.
A token bound to a tenant enqueues that tenant's jobs and sees and acts on only its jobs, runs
and dead letters; it may not pause, resume or set whole queues, nor read ``/metrics``.

``token_rate`` (``FOREBAY_TOKEN_RATE="100/s"``, a :class:`~forebay.flow.Rate`) bounds each API
token's requests to the intake, each token its own bucket in each service instance (without
tokens, every caller shares one); past it the answer is 429 with ``Retry-After``. ``allowed_hosts`` and
``cors_origins`` are comma-separated too (``forebay.internal``; ``https://ops.example.org``).
docs/security.md says what each guards against.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from enum import StrEnum
from typing import Literal

from forebay.errors import ConfigError, InvalidPayload
from forebay.flow import Rate, check_tenant
from forebay.settings import from_env, variable

__all__ = ["ApiToken", "Scope", "ServiceSettings", "parse_api_tokens"]

LogFormat = Literal["text", "json"]
_LOG_LEVELS = ("error", "warning", "info", "debug")


class Scope(StrEnum):
    """What an API token may do. ``admin`` implies ``enqueue`` and ``read``."""

    ENQUEUE = "enqueue"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token for the ``/v1`` API, the scopes it grants and the tenant it is bound to
    (None: every tenant's jobs, and the whole queues)."""

    token: str = field(repr=False)
    scopes: frozenset[Scope]
    tenant: str | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


def parse_api_tokens(text: str) -> tuple[ApiToken, ...]:
    """Parse ``TOKEN[:SCOPE+SCOPE[:TENANT]],...``; raise ConfigError saying what is wrong."""
    tokens: list[ApiToken] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        secret, _, rest = item.partition(":")
        scope_text, _, tenant = rest.partition(":")
        if not secret or any(c.isspace() for c in secret):
            raise ConfigError(
                "FOREBAY_API_TOKENS: a token is empty or contains spaces; "
                "use TOKEN, TOKEN:enqueue+read or TOKEN:enqueue+read:TENANT, separated by commas"
            )
        scopes = _parse_scopes(scope_text) if scope_text else frozenset(Scope)
        tokens.append(ApiToken(secret, scopes, _parse_tenant(tenant.strip())))
    if len({t.token for t in tokens}) != len(tokens):
        raise ConfigError("FOREBAY_API_TOKENS: the same token is listed twice")
    return tuple(tokens)


def _parse_scopes(text: str) -> frozenset[Scope]:
    names = [name.strip().lower() for name in text.split("+")]
    known = {s.value for s in Scope}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"FOREBAY_API_TOKENS: unknown scope {unknown[0]!r}; scopes are enqueue, read, admin "
            "joined with + (e.g. TOKEN:enqueue+read)"
        )
    return frozenset(Scope(n) for n in names)


def _parse_tenant(text: str) -> str | None:
    if not text:
        return None
    try:
        return check_tenant(text)
    except InvalidPayload as exc:
        raise ConfigError(f"FOREBAY_API_TOKENS: {exc}") from None


def parse_rate(text: str) -> Rate:
    """``FOREBAY_TOKEN_RATE``: a rate such as ``100/s`` (see :class:`~forebay.flow.Rate`)."""
    try:
        return Rate.parse(text)
    except ConfigError as exc:
        raise ConfigError(f"FOREBAY_TOKEN_RATE: {exc}") from None


def is_loopback(host: str) -> bool:
    """True for an address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """How ``forebay serve`` runs. Build it with :meth:`from_env`, which validates it."""

    host: str = "127.0.0.1"
    port: int = 8000
    url: str | None = None
    """Backend URL; None keeps the app's own (``Forebay(url)`` or ``FOREBAY_URL``)."""
    api_tokens: tuple[ApiToken, ...] = field(default=(), metadata=variable(parse=parse_api_tokens))
    token_rate: Rate | None = field(default=None, metadata=variable(parse=parse_rate))
    """Requests per period each API token may send to ``POST /v1/queues/{queue}/jobs`` (each
    token its own bucket, in this service instance); None: no limit."""
    workers: bool = True
    """Run the app's workers (False: intake only)."""
    worker_processes: int = 0
    """0: handlers run in the service's process and event loop; N: handler calls run in N
    child processes (the intake and the workers' leasing and settling stay in this one)."""
    max_body_bytes: int = 1_048_576
    """Largest body ``POST /v1/queues/{queue}/jobs`` accepts (sources have their own limit)."""
    retry_after_s: float = 1.0
    """``Retry-After`` sent with 503 when the backend is unreachable."""
    readiness_timeout_s: float = 2.0
    """How long ``/readyz`` waits for the backend before calling it unreachable."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM: how long running jobs may take to finish before they are released."""
    completed_retention: timedelta | None = None
    """How long the service's workers keep finished jobs of queues that set no retention of
    their own (None: the worker's default; the same variables as ``forebay worker``)."""
    dead_retention: timedelta | None = None
    cancelled_retention: timedelta | None = None
    log_format: LogFormat = "text"
    log_level: str = "info"
    access_log: bool = False
    header_timeout_s: float = 10.0
    """A connection whose request headers have not all arrived this long after it opened (or
    after its previous answer) is closed (``forebay serve`` only)."""
    body_timeout_s: float = 60.0
    """A request whose body has not all arrived this long after its headers is answered 408
    and its connection closed (``forebay serve`` only)."""
    max_connections: int = 1000
    """Most connections open at once (``forebay serve`` only; lowered at start-up to fit the
    open-file limit). When full, the connection waiting longest for its headers is closed."""
    allowed_hosts: tuple[str, ...] = ()
    """Without API tokens: ``Host`` names accepted besides ``localhost`` and loopback addresses
    (e.g. a name that points at 127.0.0.1)."""
    cors_origins: tuple[str, ...] = ()
    """Web origins (``https://ops.example.org``) whose pages may call the API (CORS); ``*``
    for any, with API tokens only."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range (1-65535)")
        if self.worker_processes < 0:
            raise ConfigError("worker_processes must be 0 (in-process) or a number of processes")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log format {self.log_format!r}: use text or json")
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ConfigError(f"log level {self.log_level!r}: use one of {', '.join(_LOG_LEVELS)}")
        _check_limits(self)
        _check_exposure(self)
        # Normalised once here, so the request path compares plain lowercase strings.
        object.__setattr__(self, "allowed_hosts", tuple(map(_host_name, self.allowed_hosts)))
        object.__setattr__(self, "cors_origins", tuple(map(_origin, self.cors_origins)))
        if "*" in self.cors_origins and not self.api_tokens:
            raise ConfigError(
                "FOREBAY_CORS_ORIGINS=* without API tokens would let any web page read and "
                "change every job; list the origins, or set FOREBAY_API_TOKENS"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: object) -> ServiceSettings:
        """Settings from ``FOREBAY_*`` variables, then ``flags`` (None: not given); see
        :func:`forebay.settings.from_env`."""
        tokens = flags.get("api_tokens")
        if tokens is not None and not isinstance(tokens, str):
            flags["api_tokens"] = _tokens(tokens)
        return from_env(cls, environ, given=flags)

    def redacted(self) -> dict[str, object]:
        """The settings for a log line, tokens replaced by their scopes."""
        shown: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["api_tokens"] = [sorted(t.scopes) for t in self.api_tokens]
        shown["token_rate"] = None if self.token_rate is None else self.token_rate.to_text()
        return shown


def _check_limits(settings: ServiceSettings) -> None:
    if settings.max_body_bytes < 1:
        raise ConfigError("max_body_bytes must be positive")
    if settings.max_connections < 1:
        raise ConfigError("max_connections must be at least 1")
    for name in ("header_timeout_s", "body_timeout_s"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{name} must be a positive number of seconds")


def _check_exposure(settings: ServiceSettings) -> None:
    if not settings.api_tokens and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve on {settings.host} without API tokens: anyone who can reach it "
            "could enqueue and purge jobs. Set FOREBAY_API_TOKENS (e.g. "
            "FOREBAY_API_TOKENS=$(openssl rand -hex 24)) or serve on 127.0.0.1"
        )


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")
_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def _host_name(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    if not _HOST_NAME.fullmatch(name):
        raise ConfigError(
            f"FOREBAY_ALLOWED_HOSTS: {text!r} is not a host name; give names without a scheme "
            "or port (forebay.internal)"
        )
    return name


def _origin(text: str) -> str:
    origin = text.strip().lower().rstrip("/")
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise ConfigError(
            f"FOREBAY_CORS_ORIGINS: {text!r} is not a web origin; give scheme, host and port "
            "only (https://ops.example.org, http://localhost:5173) or *"
        )
    return origin


def _tokens(value: object) -> tuple[ApiToken, ...]:
    if not isinstance(value, Iterable) or not all(isinstance(t, ApiToken) for t in value):
        raise ConfigError("api_tokens must be ApiToken values (see parse_api_tokens)")
    return tuple(value)
