"""Backends: where jobs are stored. :func:`backend_from_url` picks one from a URL.

* ``sqlite:///./forebay.db`` (the default): :mod:`forebay.backends.sqlite`, no extra;
* ``postgresql://user@host/db``: :mod:`forebay.backends.postgres`, ``forebay[postgres]``;
* ``redis://host:6379/0`` or ``rediss://``: :mod:`forebay.backends.redis`, ``forebay[redis]``.

This module is the composition root for backends: nothing else imports a concrete one.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from forebay.backends.base import Backend, Capabilities, PruneSpec
from forebay.errors import ConfigError, MissingExtra

__all__ = ["DEFAULT_URL", "Backend", "Capabilities", "PruneSpec", "backend_from_url"]

DEFAULT_URL = "sqlite:///./forebay.db"

_SCHEMES = {
    "sqlite": ("forebay.backends.sqlite", "SQLiteBackend", None, None),
    "postgresql": ("forebay.backends.postgres", "PostgresBackend", "postgres", "asyncpg"),
    "postgres": ("forebay.backends.postgres", "PostgresBackend", "postgres", "asyncpg"),
    "redis": ("forebay.backends.redis", "RedisBackend", "redis", "redis"),
    "rediss": ("forebay.backends.redis", "RedisBackend", "redis", "redis"),
}


def _require(extra: str | None, module: str | None) -> None:
    if module is None or extra is None:
        return
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtra(extra, module) from None


def backend_from_url(url: str) -> Backend:
    """Build (not open) the backend a URL names; raise ConfigError for a bad URL."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported backend URL {url!r}: use sqlite:///path.db, "
            "postgresql://user@host/db or redis://host:6379/0"
        )
    module_name, class_name, extra, needs = _SCHEMES[scheme]
    _require(extra, needs)
    module = importlib.import_module(module_name)
    factory: Any = getattr(module, class_name)
    if scheme == "sqlite":
        return _sqlite_from_url(factory, url)
    backend: Backend = factory.from_url(url)
    return backend


def _sqlite_from_url(factory: Any, url: str) -> Backend:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"SQLite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////absolute.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigError(f"SQLite URL {url!r} names no file: use sqlite:///./forebay.db")
    options = dict(parse_qsl(parts.query))
    kwargs: dict[str, Any] = {}
    if "synchronous" in options:
        kwargs["synchronous"] = options.pop("synchronous")
    if "poll_ms" in options:
        try:
            kwargs["poll_s"] = float(options.pop("poll_ms")) / 1000
        except ValueError:
            raise ConfigError("poll_ms must be a number of milliseconds") from None
    if options:
        raise ConfigError(f"unknown SQLite URL options: {', '.join(sorted(options))}")
    backend: Backend = factory(path, **kwargs)
    return backend
