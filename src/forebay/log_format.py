"""How forebay processes log: one line per event on stderr, as text or as JSON.

Text (the default)::

    2026-11-22T10:00:03.120Z INFO forebay.worker job 42 retrying job_id=42 queue=documents
    attempt=1 outcome=retry error="TimeoutError: handler ran longer than timeout_s=300"

(one line in the output; wrapped here). Fields passed with ``extra=`` are appended in that form,
so the lines are easy to grep and to parse; an exception is summarised on the same line. With
``log_format="json"`` each line is a JSON object instead (``forebay serve --log-format json``).

``forebay worker``, ``forebay serve`` and their handler processes (:mod:`forebay.execution`)
all set up their logging with :func:`configure_logging`, so a handler's lines look the same
wherever it runs.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LineFormatter", "LogLevel", "configure_logging"]

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LineFormatter(logging.Formatter):
    """Formats a record as exactly one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        parts = [stamp.replace("+00:00", "Z"), record.levelname, record.name, record.getMessage()]
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and not name.startswith("_") and value is not None:
                parts.append(f"{name}={_field(value)}")
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(f"exception={_field(_summary(record.exc_info[1]))}")
        return " ".join(parts).replace("\r", "\\r").replace("\n", "\\n")


def _field(value: object) -> str:
    text = str(value)
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _summary(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class _StderrHandler(logging.Handler):
    """Writes each line to stderr, or above a rich live display (a progress bar) on ``console``."""

    def __init__(self, console: Console | None) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self.console is not None:
                self.console.print(line, soft_wrap=True, markup=False, highlight=False, emoji=False)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging(
    level: LogLevel, console: Console | None = None, *, log_format: str = "text"
) -> None:
    """Send every log record (forebay's and the app's) to stderr, one line each.

    ``console``: print through it instead, when it shows a live display on stderr.
    ``log_format``: ``"text"`` or ``"json"``.
    """
    handler = _StderrHandler(console)
    if log_format == "json":
        from forebay.service.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LineFormatter())
    logging.basicConfig(level=level.value.upper(), handlers=[handler], force=True)
