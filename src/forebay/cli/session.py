"""One CLI invocation's app: which one (``--app module:attribute`` or a bare one for ``--url``),
and the single ``asyncio.run`` that opens it, runs the command, closes it and turns forebay's
errors into one line.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from forebay.app import Forebay
from forebay.backends import DEFAULT_URL
from forebay.cli.logs import LogLevel, configure_logging
from forebay.cli.output import EXIT_USAGE, fail
from forebay.errors import ForebayError

__all__ = ["import_app", "make_app", "resolve_url", "run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's async body; a forebay error or an OS error becomes one line on stderr.

    Unless the command set up logging (the worker does), only errors are logged, one line each:
    a backend's "trying again" warnings would break the one-line promise.
    """
    if not logging.getLogger().handlers:
        configure_logging(LogLevel.ERROR)
    try:
        return asyncio.run(main)
    except ForebayError as exc:
        fail(str(exc) or type(exc).__name__)
    except OSError as exc:  # a file or socket the user named: say which and why
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))


def resolve_url(url: str | None) -> str:
    """``--url``, else ``FOREBAY_URL``, else the SQLite default."""
    return url or os.environ.get("FOREBAY_URL") or DEFAULT_URL


def make_app(url: str | None, app_ref: str | None = None) -> Forebay:
    """The app a command works with: the user's (``module:attribute``) or a bare one.

    A bare app knows no queue declarations; the user's app brings them (``max_depth``,
    handlers). An explicit ``--url`` overrides the app's own URL (which it took from its code,
    else from ``FOREBAY_URL``).
    """
    if app_ref is None:
        return Forebay(resolve_url(url))
    app = import_app(app_ref)
    if url is not None and url != app.url:
        if app._backend is not None:
            fail(f"{app_ref} was built with its own backend object; drop --url", EXIT_USAGE)
        app.url = url
    return app


def import_app(ref: str) -> Forebay:
    """Import ``module:attribute`` (the current folder first on ``sys.path``, like uvicorn)."""
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        fail(f"app {ref!r} must be given as module:attribute, e.g. myapp:app", EXIT_USAGE)
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = _import_module(module_name)
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            fail(f"module {module_name!r} has no attribute {attribute!r}")
        except ForebayError as exc:  # an app built on first access refused its settings
            fail(str(exc) or type(exc).__name__)
    if not isinstance(found, Forebay):
        fail(f"{ref} is a {type(found).__name__}, not a forebay.Forebay app")
    return found


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            fail(
                f"cannot import {name!r}: no such module in {Path.cwd()} or on PYTHONPATH "
                "(run from the folder that holds it, or set PYTHONPATH)"
            )
        fail(f"importing {name!r} failed: {_one_line(exc)}")
    except Exception as exc:  # the user's module raised while importing: say where
        fail(f"importing {name!r} failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and not isinstance(exc, SyntaxError):  # a SyntaxError names its line itself
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{where}"
