"""Helpers for the Label Studio and sink tests (no tests here).

* ``stage`` (:func:`stage_fixture`) — a fresh schema on the real PostgreSQL for one test, dropped afterwards;
* :class:`Outage` — a TCP relay in front of PostgreSQL that the test opens and cuts, to make
  the database unreachable and reachable again (connections are really refused and reset);
* Label Studio bodies (``ls_task``, ``annotation_created``, ``tasks_deleted``, ...) shaped like
  the ones a real Label Studio sends, for ids and times a test chooses;
* :func:`current_view` — the dataset's current state by the documented rule, and
  :func:`staging_view` — the staging tables in the same shape, to compare them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.servers import PG_URL, require_server, unique_name


@pytest.fixture(name="stage")
async def stage_fixture() -> AsyncIterator[tuple[str, str]]:
    """``(dsn, schema)``: a schema name no other test uses; dropped after the test."""
    require_server("PostgreSQL", PG_URL)
    schema = unique_name("stage_test")
    try:
        yield PG_URL, schema
    finally:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def fetch(dsn: str, schema: str, sql: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


class Outage:
    """A relay on 127.0.0.1 to PostgreSQL: ``cut()`` refuses and resets, ``restore()`` relays."""

    def __init__(self, target: str = PG_URL) -> None:
        parts = urlsplit(target)
        self._target = target
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        parts = urlsplit(self._target)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self._server is None:  # accepted just before a cut
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
            except OSError:
                return
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        except asyncio.CancelledError:
            pass
        finally:
            # Always, even when cut while still connecting upstream: a transport left open
            # is reported when it is garbage-collected, in whatever test runs then.
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.transport.abort()
            self._pipes.discard(task)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


# -- Label Studio bodies -------------------------------------------------------------------
# Shaped like the bodies a real Label Studio 1.23 sends (see forebay/contrib/labelstudio/samples):
# every body embeds its whole project, invite token included.

INVITE_TOKEN = "project-invite-token-0123456789"
EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


def ls_time(at: datetime) -> str:
    """A time as Label Studio writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ls_project(pid: int, *, created_at: datetime = EPOCH) -> dict[str, Any]:
    return {
        "id": pid,
        "title": f"project {pid}",
        "description": "",
        "token": INVITE_TOKEN,
        "task_data_login": None,
        "task_data_password": None,
        "created_at": ls_time(created_at),
        "updated_at": ls_time(created_at),
    }


def ls_task(
    tid: int,
    pid: int,
    *,
    created_at: datetime = EPOCH,
    updated_at: datetime | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": tid,
        "project": pid,
        "data": data if data is not None else {"doc_id": f"doc{tid}", "pages": ["/p1.png"]},
        "meta": {},
        "created_at": ls_time(created_at),
        "updated_at": ls_time(updated_at or created_at),
        "inner_id": tid,
        "total_annotations": 1,
    }


def ls_annotation(
    aid: int,
    tid: int,
    pid: int,
    *,
    created_at: datetime = EPOCH,
    updated_at: datetime | None = None,
    regions: int = 2,
    label: str = "Total",
) -> dict[str, Any]:
    result: list[dict[str, Any]] = []
    for r in range(regions):
        box = {"x": 10.0 + r, "y": 20.0, "width": 5.0, "height": 2.5, "rotation": 0}
        result.append(
            {
                "id": f"a{aid}r{r}",
                "from_name": "box",
                "to_name": "page",
                "type": "rectanglelabels",
                "item_index": 0,
                "value": {**box, "rectanglelabels": [label]},
            }
        )
        result.append(
            {
                "id": f"a{aid}r{r}",
                "from_name": "transcription",
                "to_name": "page",
                "type": "textarea",
                "item_index": 0,
                "value": {**box, "text": [f"text {aid}/{r}"]},
            }
        )
    return {
        "id": aid,
        "task": tid,
        "project": pid,
        "result": result,
        "was_cancelled": False,
        "ground_truth": False,
        "lead_time": 1.5,
        "completed_by": 1,
        "created_at": ls_time(created_at),
        "updated_at": ls_time(updated_at or created_at),
    }


def annotation_created(task: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": annotation,
        "task": task,
        "project": ls_project(task["project"]),
    }


def tasks_created(pid: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"action": "TASKS_CREATED", "tasks": tasks, "project": ls_project(pid)}


def tasks_deleted(pid: int, ids: list[int]) -> dict[str, Any]:
    return {
        "action": "TASKS_DELETED",
        "tasks": [{"id": i} for i in ids],
        "project": ls_project(pid),
    }


def annotations_deleted(pid: int, ids: list[int]) -> dict[str, Any]:
    return {
        "action": "ANNOTATIONS_DELETED",
        "annotations": [{"id": i} for i in ids],
        "project": ls_project(pid),
    }


def project_deleted(pid: int) -> dict[str, Any]:
    return {"action": "PROJECT_DELETED", "project": {"id": pid}}


# -- what is current -----------------------------------------------------------------------

Key = tuple[int, ...] | tuple[int, str]
View = dict[str, dict[Any, dict[str, Any]]]
"""``{table: {key: row}}``: each key's current row, ``deleted_at`` its effective deletion."""

_BOOKKEEPING = ("change_id", "op")


def dataset_rows(root: Path, table: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [
        row
        for shard in sorted((root / "data" / table).glob("*.parquet"))
        for row in pq.read_table(shard).to_pylist()
    ]


_IDS = {"projects": "project_id", "documents": "task_id", "annotations": "annotation_id"}
_PARENTS = {
    "projects": (),
    "documents": (("projects", "project_id"),),
    "annotations": (("documents", "task_id"), ("projects", "project_id")),
}


def current_view(root: Path) -> View:
    """The dataset's current state, by the rule docs/labelstudio.md states ("The dataset").

    A key's current row is its upsert with the newest ``updated_at``. It is deleted at the
    earliest delete of its own key, its task or its project whose ``deleted_at`` is not before
    the row's ``created_at`` (any delete, when the row has no ``created_at``): a version
    created after a delete is a new object under a reused id. Extractions and boxes are those
    of their annotation's current version, deleted with it.
    """
    tables = ("projects", "documents", "annotations", "extractions", "pdf_boxes")
    rows = {t: dataset_rows(root, t) for t in tables}
    deletes: dict[tuple[str, Any], list[datetime]] = {}
    for table, column in _IDS.items():
        for row in rows[table]:
            if row["op"] == "delete":
                deletes.setdefault((table, row[column]), []).append(row["deleted_at"])
    view: View = {}
    for table, column in _IDS.items():
        view[table] = {}
        for key, row in _newest(rows[table], column).items():
            chain = [(table, key)] + [(t, row[c]) for t, c in _PARENTS[table]]
            created = row.get("created_at")
            times = [
                at for k in chain for at in deletes.get(k, []) if created is None or at >= created
            ]
            view[table][key] = _current(row, min(times) if times else None)
    for table in ("extractions", "pdf_boxes"):
        view[table] = {}
        for row in rows[table]:
            head = view["annotations"].get(row["annotation_id"])
            if head is not None and head["updated_at"] == row["updated_at"]:
                key = (row["annotation_id"], row["region_id"])
                view[table][key] = _current(row, head["deleted_at"])
    return view


def _newest(rows: list[dict[str, Any]], column: str) -> dict[Any, dict[str, Any]]:
    newest: dict[Any, dict[str, Any]] = {}
    for row in rows:
        held = newest.get(row[column])
        if row["op"] != "delete" and (
            held is None or _newer(row["updated_at"], held["updated_at"])
        ):
            newest[row[column]] = row
    return newest


def _newer(a: datetime | None, b: datetime | None) -> bool:
    return b is None or (a is not None and a > b)


def _current(row: dict[str, Any], deleted_at: datetime | None) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in _BOOKKEEPING}
    out["deleted_at"] = deleted_at
    return out


async def staging_view(dsn: str, schema: str) -> View:
    """The staging tables as the same ``{table: {key: row}}`` (rows with a version only:
    a tombstone of a key never seen has no current row)."""
    view: View = {}
    for table, key in (
        ("projects", ("project_id",)),
        ("documents", ("task_id",)),
        ("annotations", ("annotation_id",)),
        ("extractions", ("annotation_id", "region_id")),
        ("pdf_boxes", ("annotation_id", "region_id")),
    ):
        rows = await fetch(dsn, schema, f"SELECT * FROM {table} WHERE updated_at IS NOT NULL")
        view[table] = {
            (row[key[0]] if len(key) == 1 else tuple(row[k] for k in key)): row for row in rows
        }
    return view


def liveness(view: View) -> dict[str, dict[Any, bool]]:
    """``{table: {key: alive}}``: what two views must agree on whatever their clocks."""
    return {
        t: {k: row["deleted_at"] is None for k, row in rows.items()} for t, rows in view.items()
    }
