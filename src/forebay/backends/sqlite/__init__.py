"""The embedded SQLite backend (the default)."""

from forebay.backends.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
