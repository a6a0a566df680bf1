"""One CLI invocation's app: which one (``--app module:attribute`` or a bare one for ``--url``),
and the single ``asyncio.run`` that opens it, runs the command, closes it and turns forebay's
errors into one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from forebay import app_reference
from forebay.app import Forebay
from forebay.app_reference import is_app_reference
from forebay.cli.output import EXIT_USAGE, fail
from forebay.cli.store import Use, open_noting, require_store, with_window
from forebay.errors import ConfigError, ForebayError, InvalidPayload
from forebay.logs import LogLevel, configure_logging
from forebay.settings import resolve_url

__all__ = ["Use", "import_app", "make_app", "resolve_url", "run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], app: Forebay | None = None) -> T:
    """Run a command's async body; a forebay error or an OS error becomes one line on stderr.

    With ``app``, open it first, saying "connecting to ..." on stderr when that takes a while
    (see :mod:`forebay.cli.store`). Unless the command set up logging (the worker does), only
    errors are logged, one line each: a backend's "trying again" warnings would break the
    one-line promise.
    """
    if not logging.getLogger().handlers:
        configure_logging(LogLevel.ERROR)
    try:
        return asyncio.run(main if app is None else _opened_first(app, main))
    except (ConfigError, InvalidPayload) as exc:  # bad input: a usage error, like click's
        fail(str(exc) or type(exc).__name__, EXIT_USAGE)
    except ForebayError as exc:
        fail(str(exc) or type(exc).__name__)
    except OSError as exc:  # a file or socket the user named: say which and why
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))


async def _opened_first(app: Forebay, main: Coroutine[Any, Any, T]) -> T:
    try:
        await open_noting(app)
    except BaseException:
        main.close()  # never started
        with contextlib.suppress(ForebayError, OSError):
            await app.close()  # whatever the failed open left behind
        raise
    return await main


def make_app(url: str | None, app_ref: str | None = None, *, use: Use = Use.WRITE) -> Forebay:
    """The app a command works with: the user's (``module:attribute``) or a bare one.

    A bare app knows no queue declarations; the user's app brings them (``max_depth``,
    handlers). An explicit ``--url`` overrides the app's own URL (which it took from its code,
    else from ``FOREBAY_URL``): see :func:`forebay.settings.resolve_url`. ``use`` says how the
    command uses the store (:class:`~forebay.cli.store.Use`): readers refuse a missing SQLite
    file, interactive commands give up on an unreachable server after a few seconds.
    """
    if app_ref is None:
        app = Forebay(url)
    else:
        app = import_app(app_ref)
        if url is not None:
            try:
                app.use_url(url)
            except ConfigError:
                fail(f"{app_ref} was built with its own backend object; drop --url", EXIT_USAGE)
    if use is Use.READ:
        require_store(app.url)
    if use is not Use.SERVE:
        with contextlib.suppress(ConfigError):  # an app with its own backend object keeps it
            app.use_url(with_window(app.url))
    return app


def import_app(ref: str) -> Forebay:
    """Import ``module:attribute`` (see :mod:`forebay.app_reference`); a mistake is one line."""
    if not is_app_reference(ref):
        fail(f"app {ref!r} must be given as module:attribute, e.g. myapp:app", EXIT_USAGE)
    try:
        return app_reference.import_app(ref)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
