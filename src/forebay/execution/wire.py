"""What a handler pool and its processes say to each other over their socket pair.

Each message is a length-prefixed pickle (an 8-byte big-endian length, then the pickle):

* pool → process: ``("call", call_id, queue, jobs)``, ``("cancel", call_id)``; the jobs'
  payloads travel as their stored JSON text (the worker leases them undecoded) and are read
  in the process;
* process → pool: ``("ready",)``, ``("result", call_id, "ok" | "error" | "cancelled", value)``,
  ``("progress", job_id, lease_token, pct, message)`` (``job.progress()`` inside a handler).

``value`` of an ``ok`` result is ``(errors, result)``: the per-job errors a batch handler
returned (``{}`` for one job), each as :func:`dump_error` describes it, and a one-job
handler's return value as the JSON text of the job's result (None: it returned None); of an
``error`` result, the error the call raised. Exceptions travel as their class, ``args`` and
attributes (rebuilt without calling ``__init__``), so ``Defer``, ``PermanentError`` and the
sinks' errors keep their meaning; the process's traceback rides along, as a note and as the
rebuilt exception's ``remote_traceback`` (what the job's errors history keeps). Both ends are
the same installed forebay, so unpickling trusts the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import struct
import traceback
from typing import Final, TypeAlias

from forebay.worker.decision import traceback_of

__all__ = ["DumpedError", "dump_error", "frame", "load_error", "receive"]

_HEADER: Final = struct.Struct("!Q")

DumpedError: TypeAlias = tuple[bytes | None, str]
"""An exception as (pickled class, args and attributes; or None) and its traceback text."""


def frame(message: object) -> bytes:
    """``message`` as one length-prefixed pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def receive(reader: asyncio.StreamReader) -> tuple[object, ...] | None:
    """The next message, or None when the other side closed the socket (or is not one of us)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        message = pickle.loads(await reader.readexactly(size))  # noqa: S301  # see the docstring
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return message if isinstance(message, tuple) else None  # not ours: as good as gone


def dump_error(exc: BaseException) -> DumpedError:
    """An exception as (pickled class, args and attributes; or None) and its text."""
    text = traceback_of(exc) or "".join(traceback.format_exception(exc)).rstrip()
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if k != "__notes__"}
    try:
        return pickle.dumps((type(exc), exc.args, state)), text
    except Exception:  # an attribute that does not pickle: the class and message still help
        try:
            return pickle.dumps((type(exc), exc.args, {})), text
        except Exception:
            return None, text


def load_error(dumped: DumpedError) -> BaseException:
    """The exception :func:`dump_error` described (a RuntimeError if it cannot be rebuilt)."""
    data, text = dumped
    exc = None if data is None else _rebuild(data)
    if exc is None:
        last = text.splitlines()[-1] if text else "unknown error"
        exc = RuntimeError(f"in a handler process: {last}")
    exc.add_note(f"raised in a handler process:\n{text}")
    with contextlib.suppress(AttributeError):  # no __dict__: the note still tells
        exc.remote_traceback = text  # type: ignore[attr-defined]
    return exc


def _rebuild(data: bytes) -> BaseException | None:
    try:
        cls, args, state = pickle.loads(data)  # noqa: S301  # see the module docstring
        exc: BaseException = cls.__new__(cls, *args)
        exc.args = args
        exc.__dict__.update(state)
    except Exception:
        return None
    return exc
