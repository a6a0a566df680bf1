"""How forebay processes log: one line per event on stderr, as text or as JSON.

Text (the default)::

    2026-11-22T10:00:03.120Z INFO forebay.worker job 42 retrying job_id=42 queue=documents
    attempt=1 outcome=retry error="TimeoutError: handler ran longer than timeout_s=300"

(one line in the output; wrapped here). Fields passed with ``extra=`` are appended in that form,
so the lines are easy to grep and to parse; an exception is summarised on the same line. With
``log_format="json"`` (``forebay serve --log-format json``) each line is a JSON object with the
time, level, logger, message and every ``extra=`` field, ready for a log pipeline.

Every state change has one log line with ``job_id``, ``queue`` and ``attempt``: the worker logs
outcomes (logger ``forebay.worker``; completions at DEBUG, the rest at INFO) and
:class:`EnqueueLogger` logs new jobs (logger ``forebay.intake``, at DEBUG, so a busy intake does
not pay for them unless asked: ``--log-level debug``).

``forebay worker``, ``forebay serve`` and the service's handler processes all set up their
logging with :func:`configure_logging`, so a handler's lines look the same wherever it runs.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from forebay.job import Job
from forebay.observer import Outcome

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EnqueueLogger", "JsonFormatter", "LineFormatter", "LogLevel", "configure_logging"]

log = logging.getLogger("forebay.intake")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LineFormatter(logging.Formatter):
    """Formats a record as exactly one line of text (see the module docstring)."""

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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


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


def _drop_color_message(record: logging.LogRecord) -> bool:
    """uvicorn attaches a copy of its message with terminal colours; one message is enough."""
    record.__dict__.pop("color_message", None)
    return True


def configure_logging(
    level: LogLevel, console: Console | None = None, *, log_format: str = "text"
) -> None:
    """Send every log record (forebay's, uvicorn's and the app's) to stderr, one line each.

    ``console``: print through it instead, when it shows a live display on stderr.
    ``log_format``: ``"text"`` or ``"json"``.
    """
    handler = _StderrHandler(console)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LineFormatter())
    handler.addFilter(_drop_color_message)
    logging.basicConfig(level=level.value.upper(), handlers=[handler], force=True)


class EnqueueLogger:
    """An observer that logs each new job (DEBUG): the none → queued state change."""

    def enqueued(self, jobs: Sequence[Job]) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        for job in jobs:
            log.debug(
                "job %s %s",
                job.id,
                "queued" if job.created else "already stored (same key)",
                extra={
                    "job_id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "state": str(job.state),
                    "key": job.key,
                },
            )

    def settled(self, job: Job, outcome: Outcome, duration_s: float) -> None:
        """Outcomes are logged by the worker itself."""
