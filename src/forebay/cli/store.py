"""Which store a command opens, and how: the SQLite file a reader must find, the short
reconnect window of interactive commands, and the "connecting to ..." notice while they wait.

Interactive commands (``stats``, ``jobs``, ``job``, ``enqueue``, ``dead ...``, ``cancel``) answer
a person: when PostgreSQL or Redis does not answer they say so at once on stderr and give up
after :data:`INTERACTIVE_RECONNECT_S` (a ``reconnect_s`` in the URL still wins). Workers and
``forebay serve`` keep the backend's own window and ride out restarts. Read-only commands refuse
a SQLite file that does not exist instead of creating an empty store to look at.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from forebay.app import Forebay
from forebay.cli.output import fail, stderr
from forebay.urls import redacted

__all__ = [
    "INTERACTIVE_RECONNECT_S",
    "NOTICE_AFTER_S",
    "Use",
    "open_noting",
    "require_store",
    "shown",
    "sqlite_path",
    "with_window",
]

INTERACTIVE_RECONNECT_S = 3.0
"""How long an interactive command waits for an unreachable PostgreSQL or Redis."""
NOTICE_AFTER_S = 0.3
"""Not connected after this long: say where it is connecting, so a person is not left waiting
in silence."""
_NETWORKED = ("postgresql", "postgres", "redis", "rediss")


class Use(enum.Enum):
    """What a command does with the store."""

    READ = "read"
    """Only looks: the store must exist; interactive."""
    WRITE = "write"
    """Changes it (creating a SQLite file if need be); interactive."""
    SERVE = "serve"
    """Runs for long (worker, serve): keeps reconnecting for the backend's own window."""


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:`` URL (None for other backends)."""
    if _scheme(url) != "sqlite":
        return None
    path = urlsplit(url).path
    return Path(path[1:] if path.startswith("/") else path)


def shown(url: str) -> str:
    """The store as a person should read it: password redacted, a SQLite file's full path."""
    path = sqlite_path(url)
    if path is not None:
        return f"sqlite:///{path.resolve()}"
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "reconnect_s"
    ]
    return redacted(urlunsplit(parts._replace(query=urlencode(query))))


def with_window(url: str, reconnect_s: float = INTERACTIVE_RECONNECT_S) -> str:
    """``url`` with a short ``reconnect_s`` when it names PostgreSQL or Redis without one."""
    if _scheme(url) not in _NETWORKED:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "reconnect_s" for name, _ in query):
        return url
    query.append(("reconnect_s", f"{reconnect_s:g}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def require_store(url: str) -> None:
    """Exit with an error when ``url`` is a SQLite file that does not exist (for readers)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        fail(
            f"no store at {shown(url)}: the file does not exist. Check --url or FOREBAY_URL "
            "(enqueue, worker, serve and migrate create it)"
        )


async def open_noting(app: Forebay) -> None:
    """Open ``app``; if that takes a while (a server that does not answer), say so on stderr."""
    opening = asyncio.ensure_future(app.open())
    done, _ = await asyncio.wait({opening}, timeout=NOTICE_AFTER_S)
    if not done:
        stderr().print(
            f"connecting to {shown(app.url)} (retrying)…", highlight=False, soft_wrap=True
        )
    await opening
