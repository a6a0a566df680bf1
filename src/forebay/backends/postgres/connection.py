"""How the PostgreSQL backend talks to the server: settings, the pool, riding out restarts, and
the boundary where asyncpg and OS errors become forebay's error tree.

Error translation::

    OSError, TimeoutError, connection errors (08...), server shutting down or starting up
    (57P01/57P02/57P03), too many connections, "connection is closed", a connection
    left in an impossible protocol state (seen during server shutdown)  ->  BackendUnavailable
    a value PostgreSQL refuses (22..., e.g. a NUL character in a key
    or in a filter: the caller's mistake, not an outage)                ->  InvalidPayload
    refused credentials or a database that does not exist (28..., 3D000)  ->  BackendError
                                                  naming the server, at once, never retried
    any other asyncpg error                                            ->  BackendError

Retries: when the server restarts, the pool replaces its dead connections by itself. An
operation that failed because the server could not be reached is tried again, with backoff, for
up to ``reconnect_s``: always if it never reached the server (no connection could be had), and
also after an error mid-flight when repeating it is harmless (leasing: a lease that did commit
just expires and its jobs run again; reads; heartbeats). Other operations (enqueue without
keys, settling outcomes) raise BackendUnavailable rather than risk doing their work twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from forebay.backends.postgres.schema import DEFAULT_SCHEMA, validate_schema
from forebay.errors import BackendError, BackendUnavailable, ConfigError, InvalidPayload
from forebay.urls import redacted

__all__ = ["Connector", "PostgresSettings", "Resend", "raise_translated", "translate"]

log = logging.getLogger("forebay.postgres")

T = TypeVar("T")

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.InternalClientError,  # the connection is in a state it cannot go on from
)
_REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # 28000: no such role, or pg_hba refuses
    asyncpg.InvalidPasswordError,  # 28P01
    asyncpg.InvalidCatalogNameError,  # 3D000: no such database
)
"""The server answered, and asking again gets the same answer."""
_FIRST_RETRY_DELAY_S = 0.05
_MAX_RETRY_DELAY_S = 1.0


class Resend(enum.Enum):
    """When an operation that failed for want of a server may be run again."""

    NEVER = "never"
    """Report the failure at once (health checks)."""
    IF_UNSENT = "if_unsent"
    """Only if it never reached the server: it must not run twice."""
    ALWAYS = "always"
    """Running it twice is harmless."""


def translate(exc: BaseException, where: str | None = None) -> BaseException:
    """asyncpg and OS errors become BackendUnavailable / BackendError / InvalidPayload; others
    pass through. ``where`` (the server's URL, password redacted) names the server in the
    message for refused credentials."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, _REFUSED):
        at = f" at {where}" if where else ""
        return BackendError(
            f"PostgreSQL{at} refused the connection: {_describe(exc)}; "
            "check the user, password and database in the URL"
        )
    if isinstance(exc, _UNAVAILABLE) or (
        isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
    ):
        return BackendUnavailable(f"PostgreSQL is unreachable: {_describe(exc)}")
    if isinstance(exc, asyncpg.DataError):
        return InvalidPayload(f"PostgreSQL refused a value: {_describe(exc)}")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return BackendError(f"PostgreSQL error: {_describe(exc)}")
    return exc


def raise_translated(exc: Exception, where: str | None = None) -> NoReturn:
    """Raise ``exc`` as forebay's error (chained to the original), or as is if it is not a
    driver or OS error."""
    error = translate(exc, where)
    if error is exc:
        raise exc
    raise error from exc


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "sqlstate", None)
    text = str(exc) or type(exc).__name__
    return f"{text} [{code}]" if code else text


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Where the database is and how forebay uses it (all settable in the URL's query)."""

    dsn: str
    """asyncpg's DSN (libpq URL syntax; several hosts allowed) without forebay's options."""
    schema: str = DEFAULT_SCHEMA
    """PostgreSQL schema holding forebay's tables (``?schema=``)."""
    pool_size: int = 10
    """Most connections in the pool (``?pool_size=``); the listener uses one more."""
    reconnect_s: float = 10.0
    """How long an operation keeps trying while the server is unreachable (``?reconnect_s=``)."""
    poll_s: float = 0.5
    """Idle workers poll this often while the LISTEN connection is down (``?poll_ms=``)."""
    server_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> PostgresSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"not a PostgreSQL URL: {url!r} (use postgresql://user@host/db)")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        kwargs: dict[str, Any] = {}
        if "schema" in options:
            kwargs["schema"] = validate_schema(options.pop("schema"))
        if "pool_size" in options:
            kwargs["pool_size"] = _number(options.pop("pool_size"), "pool_size", int, minimum=1)
        if "reconnect_s" in options:
            kwargs["reconnect_s"] = _number(options.pop("reconnect_s"), "reconnect_s", float)
        if "poll_ms" in options:
            kwargs["poll_s"] = _number(options.pop("poll_ms"), "poll_ms", float, minimum=1) / 1000
        # Our defaults unless the URL sets them: asyncpg lets explicit settings win over the URL.
        defaults = {"application_name": "forebay", "jit": "off"}
        server_settings = {k: v for k, v in defaults.items() if k not in options}
        dsn = urlunsplit(parts._replace(query=urlencode(options)))
        return cls(dsn=dsn, server_settings=server_settings, **kwargs)


def _number(text: str, name: str, kind: type[int] | type[float], minimum: float = 0) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"PostgreSQL URL option {name}={text!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"PostgreSQL URL option {name} must be at least {minimum:g}")
    return value


class Connector:
    """Owns the connection pool; runs operations with translation and bounded retries."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._pool: Any = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def connect(self) -> Any:
        """A new connection outside the pool (the listener's), errors translated."""
        try:
            return await asyncpg.connect(
                self.settings.dsn, server_settings=self.settings.server_settings, timeout=10
            )
        except Exception as exc:
            raise_translated(exc, redacted(self.settings.dsn))

    async def open(self) -> None:
        if self._pool is not None:
            return

        async def create() -> Any:
            try:
                return await asyncpg.create_pool(
                    self.settings.dsn,
                    min_size=1,
                    max_size=self.settings.pool_size,
                    server_settings=self.settings.server_settings,
                    timeout=10,
                    reset=_keep_session,
                )
            except Exception as exc:
                raise _Unsent(exc) from exc

        self._pool = await self._attempt(create, Resend.IF_UNSENT)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except (Exception, TimeoutError):
                pool.terminate()

    async def run(self, op: Callable[[Any], Awaitable[T]], resend: Resend = Resend.IF_UNSENT) -> T:
        """Run ``op(connection)`` on a pooled connection; see the module docstring."""
        if self._pool is None:
            raise BackendError("the PostgreSQL backend is not open; call open() first")
        pool = self._pool

        async def on_pooled() -> T:
            try:
                conn = await pool.acquire()
            except Exception as exc:
                raise _Unsent(exc) from exc
            try:
                return await op(conn)
            except Exception as exc:
                if isinstance(translate(exc), BackendUnavailable):
                    # In doubt: let the pool open a fresh one for the next use. (A connection
                    # the server closed is already back in the pool: nothing to do then.)
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
                raise
            finally:
                try:
                    await pool.release(conn)
                except Exception as exc:  # the pool has dropped the connection; nothing is lost
                    log.debug("dropped a broken pooled connection: %s", _describe(exc))

        return await self._attempt(on_pooled, resend)

    async def _attempt(self, op: Callable[[], Awaitable[T]], resend: Resend) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.reconnect_s
        delay = _FIRST_RETRY_DELAY_S
        while True:
            try:
                return await op()
            except Exception as exc:
                unsent = isinstance(exc, _Unsent)
                cause = exc.cause if isinstance(exc, _Unsent) else exc
                error = translate(cause)
                retryable = resend is Resend.ALWAYS or (resend is Resend.IF_UNSENT and unsent)
                if (
                    not isinstance(error, BackendUnavailable)
                    or not retryable
                    or loop.time() + delay > deadline
                ):
                    raise_translated(cause, redacted(self.settings.dsn))
                log.warning("%s; trying again in %.2fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_DELAY_S)


class _Unsent(Exception):
    """Wraps an error raised before the operation reached the server (getting a connection)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _keep_session(_conn: Any) -> None:
    """Pool reset hook: forebay sets no session state, so a returned connection needs no
    reset query (asyncpg still rolls back an open transaction). Saves a round trip per use."""
