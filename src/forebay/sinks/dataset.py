"""A dataset sink: parquet shards in the Hugging Face dataset layout.

Layout (what ``datasets.load_dataset(folder, table)`` reads)::

    <root>/README.md                                  configs: one per table
    <root>/data/<table>/train-<seq>-<hash>.parquet    one shard per table per flush

* **Batched**: writes that arrive while a flush is being written or within
  ``flush_interval_s`` of the last one share the next flush, so a steady stream makes at most
  one shard per table per interval; each :meth:`DatasetSink.write` returns only once its rows
  are in a shard on storage (the dataset can be the system of record).
* **Idempotent**: every row carries an id column (``change_id`` by default). Ids already in the
  dataset are skipped (``duplicate``), so a retried batch rewrites nothing; a shard's name ends
  with a hash of the ids it holds, and ``<seq>`` orders shards by time of writing. A row
  without an id (missing, None or empty) is refused: it would be taken for every other.
* **Atomic**: a shard is written to a hidden temporary name, flushed to disk, then renamed;
  readers never see half a file.
* **Where**: a local folder by default, or any fsspec URL (``s3://bucket/prefix``, ...; the
  filesystem's own package must be installed). With :class:`~forebay.sinks.hub.HubSync` the
  folder is also committed to a Hub dataset repository at a bounded rate.

Errors: storage I/O failing → :class:`~forebay.SinkUnavailable`; rows that do not fit the
table's schema → :class:`~forebay.SinkRejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import operator
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, cast

from forebay.errors import ConfigError, MissingExtra, SinkError, SinkRejected, SinkUnavailable
from forebay.lifecycle import BackgroundTask
from forebay.sinks.base import WriteOutcome, WriteResult

if TYPE_CHECKING:
    from forebay.sinks.hub import HubSync

__all__ = ["ColumnType", "DatasetBatch", "DatasetSink", "TableSpec"]

log = logging.getLogger("forebay.sinks.dataset")

ColumnType: TypeAlias = Literal[
    "string", "int64", "float64", "bool", "timestamp", "list<string>", "list<float64>"
]
TableSpec: TypeAlias = Sequence[tuple[str, str]]
"""A table's columns as ``(name, type)`` pairs, types from :data:`ColumnType`."""
DatasetBatch: TypeAlias = Mapping[str, Sequence[Mapping[str, object]]]
"""Rows to write, per table."""

SHARD_NAME: Final = re.compile(r"train-(\d{5,})-([0-9a-f]{16})\.parquet")

_EPOCH: Final = datetime(1970, 1, 1)
_EPOCH_UTC: Final = _EPOCH.replace(tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_DATETIME_OR_NONE: Final = frozenset({datetime, type(None)})


@dataclass(slots=True)
class _TableState:
    seen: set[str]
    next_seq: int


class DatasetSink:
    """Writes rows as parquet shards in the Hugging Face layout. See the module docstring.

    ``tables``: ``{table: [(column, type), ...]}``; every table's first column named
    ``id_column`` identifies a row. ``title``: the README's heading.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        tables: Mapping[str, TableSpec],
        id_column: str = "change_id",
        flush_interval_s: float = 1.0,
        title: str = "forebay dataset",
        description: str = "",
        hub: HubSync | None = None,
        storage_options: Mapping[str, object] | None = None,
    ) -> None:
        if flush_interval_s < 0:
            raise ConfigError("flush_interval_s must not be negative")
        for table, columns in tables.items():
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", table):
                raise ConfigError(f"table name {table!r} must be a plain file name")
            if id_column not in {name for name, _ in columns}:
                raise ConfigError(f"table {table!r} has no {id_column!r} column")
        self.root = os.fspath(root)
        self.tables = {t: tuple(c) for t, c in tables.items()}
        self.id_column = id_column
        self.flush_interval_s = flush_interval_s
        self.title = title
        self.description = description
        self.hub = hub
        self._folder = _Folder(self.root, dict(storage_options or {}))
        self._schemas: dict[str, Any] = {}
        self._timestamps: dict[str, frozenset[str]] = {}
        self._state: dict[str, _TableState] = {}
        self._pending: list[tuple[DatasetBatch, asyncio.Future[WriteResult]]] = []
        self._flusher = BackgroundTask("forebay-dataset-flush", self._flush_loop)
        self._last_flush = float("-inf")
        self._opened = False
        self._open_lock = asyncio.Lock()
        self.shards_written = 0

    def __repr__(self) -> str:
        return f"DatasetSink({self.root!r})"

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the folder and its README; start the Hub sync if any. Idempotent."""
        if self._opened:
            return
        async with self._open_lock:
            if self._opened:
                return
            pa = _pyarrow()
            self._schemas = {t: _schema(pa, cols) for t, cols in self.tables.items()}
            self._timestamps = {
                t: frozenset(n for n, kind in cols if kind == "timestamp")
                for t, cols in self.tables.items()
            }
            try:
                await asyncio.to_thread(self._folder.write_if_changed, "README.md", self.readme())
            except OSError as exc:
                raise SinkUnavailable(f"dataset folder {self.root} is not writable: {exc}") from exc
            # pyarrow imports what it needs (pandas among others: about a second) on its first
            # table; pay for that here, off the event loop, not in the first flush.
            await asyncio.to_thread(_warm_up, pa, next(iter(self._schemas.values()), None))
            self._opened = True
            if self.hub is not None:
                self.hub.start(self._folder.local_path())

    async def close(self) -> None:
        """Wait for pending writes; stop the Hub sync (what it has not committed yet is
        committed after the next start). Idempotent."""
        await self._flusher.join()
        if self.hub is not None:
            await self.hub.stop()
        self._opened = False

    def readme(self) -> str:
        """The dataset card: YAML ``configs`` (one per table) and a short description."""
        lines = ["---", "configs:"]
        for table in self.tables:
            lines += [
                f"- config_name: {table}",
                "  data_files:",
                "  - split: train",
                f"    path: data/{table}/*.parquet",
            ]
        lines += ["---", "", f"# {self.title}", ""]
        if self.description:
            lines += [self.description.strip(), ""]
        lines += [
            "Written by forebay. Each table is a log of changes: rows are appended, never",
            f"rewritten; `{self.id_column}` identifies a change, so a row never appears twice.",
            "",
            "| table | columns |",
            "| --- | --- |",
        ]
        for table, columns in self.tables.items():
            lines.append(f"| `{table}` | {', '.join(f'`{n}`' for n, _ in columns)} |")
        return "\n".join(lines) + "\n"

    # -- writing -----------------------------------------------------------------------------
    async def write(self, batch: DatasetBatch) -> WriteResult:
        """Append ``batch``'s new rows; return once they are on storage."""
        unknown = set(batch) - set(self.tables)
        if unknown:
            raise SinkRejected(f"dataset has no table(s) {', '.join(sorted(unknown))}")
        if not any(batch.values()):
            return WriteResult()
        self._check_ids(batch)
        await self.open()
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        # A caller cancelled while waiting leaves its rows to be written anyway (harmless:
        # rows are idempotent); mark the outcome retrieved so nothing is logged about it.
        future.add_done_callback(_retrieve)
        self._pending.append((batch, future))
        # The flusher ends once it finds nothing pending, with no await between that look and
        # its end: a running flusher will see this batch, an ended one is started again.
        self._flusher.start()
        return await asyncio.shield(future)

    def _check_ids(self, batch: DatasetBatch) -> None:
        """Refuse a batch holding a row without an id (before it joins a flush, so only this
        write fails)."""
        for table, rows in batch.items():
            for row in rows:
                row_id = row.get(self.id_column)
                if row_id is None or row_id == "":
                    raise SinkRejected(
                        f"a row of table {table!r} has no {self.id_column!r}; every row needs "
                        "one (rows are written once per id, so rows without one would be lost)"
                    )

    async def _flush_loop(self) -> None:
        # Only this task flushes, so shards of one table are written one at a time and the
        # per-table state (seen ids, next sequence number) is never shared between threads.
        while self._pending:
            wait_s = self._last_flush + self.flush_interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the flush interval: later writes join this flush
            pending, self._pending = self._pending, []
            # Flushes start at least flush_interval_s apart (so at most one shard per table
            # per interval); the time a flush takes is not added to the wait for the next.
            self._last_flush = time.monotonic()
            files = await self._flush_pending(pending)
            if files and self.hub is not None:
                self.hub.notify()

    async def _flush_pending(
        self, pending: list[tuple[DatasetBatch, asyncio.Future[WriteResult]]]
    ) -> int:
        """Write ``pending`` as one flush and settle its futures; return the shards written.

        When the rows are refused (they do not fit a schema) and several writes share the
        flush, each is retried alone, so one bad batch does not fail the others.
        """
        try:
            results, files = await asyncio.to_thread(self._flush, [b for b, _ in pending])
        except SinkRejected as exc:
            if len(pending) == 1:
                _settle(pending[0][1], error=SinkRejected, message=str(exc))
                return 0
            total = 0
            for item in pending:
                total += await self._flush_pending([item])
            return total
        except Exception as exc:
            error = _translate(exc, self.root)
            log.warning("dataset flush failed: %s", error)
            for _, future in pending:
                _settle(future, error=type(error), message=str(error))
            return 0
        for (_, future), result in zip(pending, results, strict=True):
            _settle(future, result=result)
        return files

    def _flush(self, batches: list[DatasetBatch]) -> tuple[list[WriteResult], int]:
        counts: list[dict[tuple[str, WriteOutcome], int]] = [{} for _ in batches]
        files = 0
        for table in self.tables:
            if not any(batch.get(table) for batch in batches):
                continue
            state = self._table_state(table)
            rows: list[Mapping[str, object]] = []
            ids: list[str] = []
            fresh: set[str] = set()
            for i, batch in enumerate(batches):
                batch_rows = batch.get(table, ())
                if not batch_rows:
                    continue
                batch_ids = list(
                    map(str, map(operator.methodcaller("get", self.id_column), batch_rows))
                )
                unique = set(batch_ids)
                if (
                    len(unique) == len(batch_ids)
                    and unique.isdisjoint(state.seen)
                    and unique.isdisjoint(fresh)
                ):  # the usual case: every row new
                    counts[i][(table, "applied")] = len(batch_ids)
                    fresh |= unique
                    ids += batch_ids
                    rows += batch_rows
                    continue
                for row in batch_rows:
                    row_id = str(row.get(self.id_column))
                    outcome: WriteOutcome = (
                        "duplicate" if row_id in state.seen or row_id in fresh else "applied"
                    )
                    counts[i][(table, outcome)] = counts[i].get((table, outcome), 0) + 1
                    if outcome == "applied":
                        fresh.add(row_id)
                        ids.append(row_id)
                        rows.append(row)
            if rows:
                self._write_shard(table, state, rows, ids)
                state.seen.update(ids)
                files += 1
        return [WriteResult(c) for c in counts], files

    def _write_shard(
        self, table: str, state: _TableState, rows: list[Mapping[str, object]], ids: list[str]
    ) -> None:
        pa = _pyarrow()
        pq = _parquet()
        schema = self._schemas[table]
        try:
            columns = _columns(rows, schema.names, self._timestamps[table])
            data = pa.Table.from_pydict(columns, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise SinkRejected(f"rows do not fit table {table!r}: {exc}") from exc
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, compression="zstd")
        digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
        name = f"data/{table}/train-{state.next_seq:05d}-{digest}.parquet"
        self._folder.write_atomic(name, sink.getvalue().to_pybytes())
        state.next_seq += 1
        self.shards_written += 1

    def _table_state(self, table: str) -> _TableState:
        """What the dataset already holds for ``table`` (read once, then kept up to date)."""
        state = self._state.get(table)
        if state is None:
            seen: set[str] = set()
            next_seq = 0
            for name in self._folder.names(f"data/{table}"):
                match = SHARD_NAME.fullmatch(name)
                if match is None:
                    continue
                next_seq = max(next_seq, int(match[1]) + 1)
                seen.update(self._folder.read_column(f"data/{table}/{name}", self.id_column))
            state = self._state[table] = _TableState(seen, next_seq)
        return state

    def shard_paths(self, table: str) -> list[str]:
        """The shards of ``table``, relative to the root, in write order."""
        names = [n for n in self._folder.names(f"data/{table}") if SHARD_NAME.fullmatch(n)]
        return [f"data/{table}/{n}" for n in sorted(names)]


def _columns(
    rows: Sequence[Mapping[str, object]], names: Sequence[str], timestamps: frozenset[str]
) -> dict[str, Sequence[object]]:
    """``rows`` as one sequence per column (a C-level transpose when every row has every
    column), timestamp columns of datetimes as microseconds since the epoch."""
    try:
        if len(names) == 1:
            by_column: list[Sequence[object]] = [list(map(operator.itemgetter(names[0]), rows))]
        else:
            by_column = list(zip(*map(operator.itemgetter(*names), rows), strict=True))
    except KeyError:  # a row without some column: None there
        by_column = [[row.get(name) for row in rows] for name in names]
    columns = dict(zip(names, by_column, strict=True))
    for name in timestamps:
        columns[name] = _microseconds(columns[name])
    return columns


def _microseconds(values: Sequence[object]) -> Sequence[object]:
    """Datetimes as pyarrow stores them in a ``timestamp("us", tz="UTC")`` column (an aware
    one as its instant, a naive one as UTC), converted once per distinct value: a batch's rows
    mostly share a few times. Left to pyarrow when anything else is there."""
    try:
        distinct = set(values)
    except TypeError:  # unhashable: not datetimes
        return values
    if not set(map(type, distinct)) <= _DATETIME_OR_NONE:
        return values
    lookup = {v: None if v is None else _to_microseconds(cast(datetime, v)) for v in distinct}
    return list(map(lookup.__getitem__, values))


def _to_microseconds(value: datetime) -> int:
    epoch = _EPOCH if value.utcoffset() is None else _EPOCH_UTC
    return (value - epoch) // _MICROSECOND


def _warm_up(pa: Any, schema: Any) -> None:
    if schema is None:
        return
    table = pa.Table.from_pydict({name: [] for name in schema.names}, schema=schema)
    _parquet().write_table(table, pa.BufferOutputStream(), compression="zstd")


def _settle(
    future: asyncio.Future[WriteResult],
    *,
    result: WriteResult | None = None,
    error: type[SinkError] | None = None,
    message: str = "",
) -> None:
    """Resolve a writer's future (a fresh exception per writer: they raise it separately)."""
    if future.done():
        return
    if error is None:
        future.set_result(result or WriteResult())
        return
    future.set_exception(error(message))


def _retrieve(future: asyncio.Future[WriteResult]) -> None:
    if not future.cancelled():
        future.exception()


def _translate(exc: BaseException, root: str) -> SinkError:
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, OSError):
        return SinkUnavailable(f"dataset storage {root} failed: {exc} (retrying later)")
    return SinkError(f"dataset write to {root} failed: {type(exc).__name__}: {exc}")


def _pyarrow() -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra("parquet", "pyarrow") from None
    return pyarrow


def _parquet() -> Any:
    try:
        import pyarrow.parquet  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra("parquet", "pyarrow") from None
    return pyarrow.parquet


def _schema(pa: Any, columns: TableSpec) -> Any:
    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "list<string>": pa.list_(pa.string()),
        "list<float64>": pa.list_(pa.float64()),
    }
    fields = []
    for name, kind in columns:
        if kind not in types:
            raise ConfigError(f"column {name!r}: unknown type {kind!r}; use one of {sorted(types)}")
        fields.append(pa.field(name, types[kind]))
    return pa.schema(fields)


class _Folder:
    """The dataset's storage: a local folder (fsync + rename) or an fsspec filesystem."""

    def __init__(self, root: str, storage_options: dict[str, object]) -> None:
        self._fs: Any = None
        if "://" in root and not root.startswith("file://"):
            try:
                import fsspec.core  # type: ignore[import-untyped]
            except ImportError:
                raise MissingExtra("parquet", "fsspec") from None
            self._fs, self._root = fsspec.core.url_to_fs(root, **storage_options)
        else:
            self._root = root.removeprefix("file://")

    def local_path(self) -> Path:
        if self._fs is not None:
            raise ConfigError("Hub sync needs a local dataset folder, not an fsspec URL")
        return Path(self._root)

    def _path(self, relative: str) -> str:
        return f"{self._root.rstrip('/')}/{relative}"

    def names(self, relative: str) -> list[str]:
        path = self._path(relative)
        if self._fs is None:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        if not self._fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(path, detail=False))

    def read_column(self, relative: str, column: str) -> list[str]:
        pq = _parquet()
        if self._fs is None:
            table = pq.read_table(self._path(relative), columns=[column])
        else:
            with self._fs.open(self._path(relative), "rb") as stream:
                table = pq.read_table(stream, columns=[column])
        return [str(v) for v in table.column(column).to_pylist()]

    def write_if_changed(self, relative: str, text: str) -> None:
        data = text.encode()
        path = self._path(relative)
        if self._fs is None:
            with contextlib.suppress(FileNotFoundError):
                if Path(path).read_bytes() == data:
                    return
        elif self._fs.exists(path) and self._fs.cat_file(path) == data:
            return
        self.write_atomic(relative, data)

    def write_atomic(self, relative: str, data: bytes) -> None:
        """Write ``data`` under a hidden temporary name, then rename it into place."""
        path = self._path(relative)
        folder, _, name = path.rpartition("/")
        temporary = f"{folder}/.{name}.{secrets.token_hex(4)}.tmp"
        if self._fs is not None:
            self._fs.makedirs(folder, exist_ok=True)
            self._fs.pipe_file(temporary, data)
            self._fs.mv(temporary, path)
            return
        os.makedirs(folder, exist_ok=True)
        try:
            with open(temporary, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
