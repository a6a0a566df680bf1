"""An app named by reference, ``MODULE:ATTR`` (e.g. ``myapp:app``), imported as uvicorn imports
one: the current folder first on ``sys.path``, then the attribute path read off the module.

The CLI commands name the user's app this way, and so do handler processes, which import the
app again in a process of their own. Every failure is a :class:`~forebay.errors.ConfigError`
whose message says what to fix; the CLI prints it as its one-line error.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType

from forebay.app import Forebay
from forebay.errors import ConfigError, ForebayError

__all__ = ["import_app", "is_app_reference"]


def is_app_reference(ref: str) -> bool:
    """``ref`` has the ``module:attribute`` form (both parts non-empty)."""
    module_name, sep, attribute = ref.partition(":")
    return bool(sep and module_name and attribute)


def import_app(ref: str) -> Forebay:
    """Import ``module:attribute`` and return that :class:`~forebay.Forebay` app."""
    if not is_app_reference(ref):
        raise ConfigError(f"app {ref!r} must be given as module:attribute, e.g. myapp:app")
    module_name, _, attribute = ref.partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    found: object = _import_module(module_name)
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None
        except ForebayError as exc:  # an app built on first access refused its settings
            raise ConfigError(str(exc) or type(exc).__name__) from exc
    if not isinstance(found, Forebay):
        raise ConfigError(f"{ref} is a {type(found).__name__}, not a forebay.Forebay app")
    return found


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot import {name!r}: no such module in {Path.cwd()} or on PYTHONPATH "
                "(run from the folder that holds it, or set PYTHONPATH)"
            ) from None
        raise ConfigError(f"importing {name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's module raised while importing: say where
        raise ConfigError(f"importing {name!r} failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and not isinstance(exc, SyntaxError):  # a SyntaxError names its line itself
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{where}"
