"""The SQLite writer: one thread, one connection, group commit.

Every write of a backend instance goes through one thread that owns the write connection. Callers
submit a function and await its future; the thread takes *all* operations that are waiting, runs
them in one ``BEGIN IMMEDIATE`` transaction (each inside its own savepoint, so one failing
operation does not undo the others), commits once, and then resolves every future. While one
commit is being synced to disk, new operations pile up and go into the next one: many
concurrent callers cost one fsync, yet each is answered only after its own write is durable.

Several processes may share the file: SQLite's write lock serialises their transactions and
``busy_timeout`` makes a writer wait for the lock instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from forebay.errors import BackendError, BackendUnavailable

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

_STOP = object()
_MAX_GROUP = 512  # operations per transaction: bounds the latency of the first in a group


def translate(exc: BaseException) -> BaseException:
    """sqlite3 errors become forebay's BackendError tree; others pass through."""
    if isinstance(exc, sqlite3.OperationalError):
        msg = str(exc)
        if "locked" in msg or "busy" in msg or "unable to open" in msg:
            return BackendUnavailable(f"SQLite database is unavailable: {msg}")
        return BackendError(f"SQLite error: {msg}")
    if isinstance(exc, sqlite3.Error):
        return BackendError(f"SQLite error: {exc}")
    return exc


class Writer:
    """Owns the write connection; see the module docstring."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        check: Callable[[], None] | None = None,
    ) -> None:
        """``check`` runs before each group; what it raises fails the group's every operation
        (e.g. the database file was deleted: writes would land in a file nobody can open)."""
        self._connect = connect
        self._check = check
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of operations
        self._pending: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="forebay-sqlite-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread = None
            raise translate(self._startup_error)

    def stop(self) -> None:
        """Finish every submitted operation, then close the connection and the thread."""
        if self._thread is None:
            return
        for loop in list(self._pending):
            self._hand_over(loop)
        self._inbox.put(_STOP)
        self._thread.join()
        self._thread = None

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``op`` for the next group; the future resolves after its commit.

        Operations submitted during one turn of an event loop are handed to the thread
        together at the end of that turn (a turn typically runs many requests' handlers): one
        wake-up of the thread per turn, not one per operation. (Handing them over earlier, in
        chunks, was measured: it costs more wake-ups than it gains in overlap.)"""
        if self._thread is None:
            raise BackendError("the SQLite backend is closed; open it first")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            # Only this loop's thread touches its own entry (dict operations are atomic).
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append((op, fut, loop))
        if len(pending) >= _MAX_GROUP:
            self._hand_over(loop)
        return fut

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._pending.pop(loop, None)
        if items:
            self._inbox.put(items)

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                group: list[Any] = []
                item = self._inbox.get()
                while True:
                    if item is _STOP:
                        stopping = True  # what was submitted before the stop still runs
                    else:
                        group.extend(item)
                    if len(group) >= _MAX_GROUP and not stopping:
                        break
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                if group:
                    self._run_group(conn, group)
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[Any]) -> None:
        try:
            if self._check is not None:
                self._check()
            conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, BackendError) as exc:
            self._resolve(group, [(False, translate(exc))] * len(group))
            return
        outcomes: list[tuple[bool, Any]] = []
        isolate = len(group) > 1
        for run in _runs([op for op, _fut, _loop in group]):
            outcomes.extend(_run_ops(conn, run, isolate))
        if not conn.in_transaction:  # a lone operation failed and rolled the group back
            self._resolve(group, outcomes)
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            outcomes = [(False, translate(exc))] * len(group)
        self._resolve(group, outcomes)

    @staticmethod
    def _resolve(group: list[Any], outcomes: list[tuple[bool, Any]]) -> None:
        # One wake-up per event loop, not one per operation.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_op, fut, loop), (ok, value) in zip(group, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, items in by_loop.items():
            # RuntimeError: the loop was closed meanwhile, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)


class Mergeable:
    """An operation that may run together with its neighbours of the same kind.

    Consecutive operations whose ``merge`` is the same function run as one call
    ``merge(conn, ops) -> results`` (e.g. many callers' enqueues become one executemany).
    If the merged call fails, each runs alone, so one bad operation fails only its caller.
    """

    merge: Callable[[sqlite3.Connection, list[Any]], list[Any]]

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return type(self).merge(conn, [self])[0]


def _runs(ops: list[Operation]) -> list[list[Operation]]:
    """Split a group into runs of mergeable neighbours (other operations stand alone)."""
    runs: list[list[Operation]] = []
    for op in ops:
        merge = getattr(op, "merge", None)
        if runs and merge is not None and getattr(runs[-1][0], "merge", None) is merge:
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _run_ops(
    conn: sqlite3.Connection, run: list[Operation], isolate: bool
) -> list[tuple[bool, Any]]:
    """Run one run of operations; with ``isolate``, inside a savepoint so a failure undoes
    only its own writes (a single operation needs none: its failure rolls back the group)."""
    if not isolate:
        try:
            return [(True, run[0](conn))]
        except BaseException as exc:  # handed to the caller
            _rollback(conn)
            return [(False, translate(exc))]
    if len(run) > 1:
        merged = _in_savepoint(conn, lambda c: run[0].merge(c, run))  # type: ignore[attr-defined]
        if merged[0]:
            return [(True, value) for value in merged[1]]
    return [_in_savepoint(conn, op) for op in run]


def _in_savepoint(conn: sqlite3.Connection, op: Operation) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT op")
    try:
        result = op(conn)
    except BaseException as exc:  # handed to the caller, the others go on
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return (False, translate(exc))
    conn.execute("RELEASE op")
    return (True, result)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in items:
        if fut.done():  # the caller was cancelled; the write happened all the same
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
