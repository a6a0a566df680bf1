"""How the ``forebay`` commands log: one line per event on stderr (see
:mod:`forebay.log_format`, where the formats live, shared with handler processes)."""

from __future__ import annotations

from forebay.log_format import LineFormatter, LogLevel, configure_logging

__all__ = ["LineFormatter", "LogLevel", "configure_logging"]
