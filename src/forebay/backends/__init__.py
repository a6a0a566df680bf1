"""Backends: where jobs are stored. :func:`backend_from_url` picks one from a URL.

* ``sqlite:///./forebay.db`` (the default): :mod:`forebay.backends.sqlite`, no extra;
* ``postgresql://user@host/db``: :mod:`forebay.backends.postgres`, ``forebay[postgres]``;
* ``redis://host:6379/0`` or ``rediss://``: :mod:`forebay.backends.redis`, ``forebay[redis]``.

This module is the composition root for backends: nothing else imports a concrete one.
"""

from __future__ import annotations

import importlib

from forebay.backends.base import Backend, Capabilities, PruneSpec
from forebay.errors import ConfigError, MissingExtra

__all__ = ["DEFAULT_URL", "Backend", "Capabilities", "PruneSpec", "backend_from_url"]

DEFAULT_URL = "sqlite:///./forebay.db"

# scheme -> (module, class, extra that installs its driver, the driver's module)
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
    """Build (not open) the backend a URL names; raise ConfigError for a bad URL.

    The scheme picks the backend (importing it only then, so a missing extra fails here with
    its ``pip install`` line); the backend's own ``from_url`` reads the rest.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported backend URL {url!r}: use sqlite:///path.db, "
            "postgresql://user@host/db or redis://host:6379/0"
        )
    module_name, class_name, extra, needs = _SCHEMES[scheme]
    _require(extra, needs)
    factory: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return factory.from_url(url)
