"""Changes → table records, the rows both sinks write.

One module (~560 lines) on purpose: one mapping per table, kept together so the tables' columns
and their rules (versions, deletes, revivals) read in one place.

Tables (the same names in the dataset and in the staging schema):

* ``projects``: one row per project version (title, description).
* ``documents``: one row per task version (its data and meta, page count).
* ``annotations``: one row per annotation version (who, when, the whole result as JSON).
* ``extractions``: one row per region of an annotation version: results sharing a region id
  are merged (a box, its labels and its per-region transcription become one extraction).
* ``pdf_boxes``: one row per region with a rectangle, in PDF user-space points, when the
  task's page geometry is known (see :mod:`forebay.contrib.labelstudio.pages`).
* ``events``: bodies with an unknown action, and actions sent without their payload.

Every record has a ``change_id``: a hash of its table, key and version (``updated_at``; for a
delete, ``delete`` and the time it was received). Writing a record whose ``change_id`` is
already stored changes nothing, which is what makes a redelivered job harmless in the dataset;
two deletes of one key (Label Studio reuses ids) are two records. Deletes are records with
``op = "delete"`` and ``deleted_at`` (tombstones); an annotation's regions are replaced as a
whole by each new version.

A change not scrubbed of credentials by the current rule when it was stored (a job stored by
an earlier forebay, or enqueued from code) is scrubbed here (:func:`~.events.scrub`): no sink
gets one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, NamedTuple, TypeAlias, cast

from forebay import jsonio
from forebay.contrib.labelstudio.events import SCRUB_RULE, parse_time, scrub
from forebay.contrib.labelstudio.geometry import PageGeometry, user_corners
from forebay.contrib.labelstudio.pages import PageSource
from forebay.job import JSON

__all__ = [
    "COLUMNS",
    "TABLES",
    "Column",
    "Record",
    "Records",
    "Report",
    "build_records",
]

log = logging.getLogger("forebay.labelstudio")

ColumnType: TypeAlias = Literal[
    "string", "int64", "float64", "bool", "timestamp", "list<string>", "list<float64>"
]
Record: TypeAlias = dict[str, object]
Records: TypeAlias = dict[str, list[Record]]


class Column(NamedTuple):
    """A column of a table: its name and type (as :class:`forebay.sinks.dataset.DatasetSink`
    names types)."""

    name: str
    type: ColumnType


def _columns(*spec: str) -> tuple[Column, ...]:
    out = []
    for item in spec:
        name, _, kind = item.partition(":")
        out.append(Column(name, cast(ColumnType, kind)))
    return tuple(out)


_HEAD = ("change_id:string", "op:string", "project_id:int64")
COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "projects": _columns(
        *_HEAD,
        "title:string",
        "description:string",
        "created_at:timestamp",
        "updated_at:timestamp",
        "deleted_at:timestamp",
    ),
    "documents": _columns(
        *_HEAD,
        "task_id:int64",
        "doc_id:string",
        "data:string",
        "meta:string",
        "page_count:int64",
        "created_at:timestamp",
        "updated_at:timestamp",
        "deleted_at:timestamp",
    ),
    "annotations": _columns(
        *_HEAD,
        "task_id:int64",
        "annotation_id:int64",
        "completed_by:int64",
        "was_cancelled:bool",
        "ground_truth:bool",
        "lead_time_s:float64",
        "result:string",
        "created_at:timestamp",
        "updated_at:timestamp",
        "deleted_at:timestamp",
    ),
    "extractions": _columns(
        *_HEAD,
        "task_id:int64",
        "annotation_id:int64",
        "region_id:string",
        "page_index:int64",
        "labels:list<string>",
        "text:string",
        "result_types:list<string>",
        "value:string",
        "updated_at:timestamp",
    ),
    "pdf_boxes": _columns(
        *_HEAD,
        "task_id:int64",
        "annotation_id:int64",
        "region_id:string",
        "page_index:int64",
        "label:string",
        "x0:float64",
        "y0:float64",
        "x1:float64",
        "y1:float64",
        "polygon:list<float64>",
        "rotation:float64",
        "page_box:string",
        "page_rotate:int64",
        "page_x0:float64",
        "page_y0:float64",
        "page_width:float64",
        "page_height:float64",
        "geometry_source:string",
        "updated_at:timestamp",
    ),
    "events": _columns(
        *_HEAD,
        "kind:string",
        "action:string",
        "body:string",
        "received_at:timestamp",
    ),
}
TABLES: Final = tuple(COLUMNS)

_RECT_TYPES: Final = frozenset({"rectanglelabels", "rectangle"})
_TEXT_KEYS: Final = ("text",)


@dataclass(slots=True)
class Report:
    """What one batch held besides ordinary changes, for logs and metrics."""

    unknown_actions: list[str | None] = field(default_factory=list)
    empty_actions: list[str] = field(default_factory=list)
    boxes_without_geometry: int = 0
    boxes_skipped: int = 0


@dataclass(frozen=True, slots=True)
class Received:
    """A change and when forebay received it (used as the time of a delete)."""

    change: JSON
    received_at: datetime


def build_records(changes: Sequence[Received], pages: PageSource) -> tuple[Records, Report]:
    """The records of a batch of changes, table by table, and what was unusual in it."""
    records: Records = {name: [] for name in TABLES}
    report = Report()
    for item in changes:
        _add_change(records, report, item, pages)
    return records, report


def _add_change(records: Records, report: Report, item: Received, pages: PageSource) -> None:
    change = item.change
    if not isinstance(change, dict) or change.get("scrubbed") != SCRUB_RULE:
        change = scrub(change)
    if not isinstance(change, dict):
        report.unknown_actions.append(None)
        records["events"].append(_event(change, "invalid", None, item.received_at))
        return
    kind = change.get("kind")
    project = _dict(change.get("project"))
    if project is not None and project.get("id") is not None:
        records["projects"].append(_project(project))
    if kind == "annotation":
        _add_annotation(records, report, change, pages)
    elif kind == "task":
        task = _dict(change.get("task"))
        if task is not None:
            records["documents"].append(_document(change, task))
    elif kind in ("annotation_deleted", "task_deleted", "project_deleted"):
        table, key = _DELETES[kind]
        records[table].append(_delete(table, change, key, item.received_at))
    elif kind == "empty":
        report.empty_actions.append(str(change.get("action")))
        records["events"].append(_event(change, "empty", change.get("action"), item.received_at))
    elif kind != "project":
        action = change.get("action")
        report.unknown_actions.append(action if isinstance(action, str) else None)
        records["events"].append(_event(change, "unknown", action, item.received_at))


_DELETES: Final = {
    "annotation_deleted": ("annotations", "annotation_id"),
    "task_deleted": ("documents", "task_id"),
    "project_deleted": ("projects", None),
}


def _add_annotation(
    records: Records, report: Report, change: Mapping[str, JSON], pages: PageSource
) -> None:
    annotation = _dict(change.get("annotation")) or {}
    task = _dict(change.get("task"))
    if task is not None and task.get("id") is not None:
        records["documents"].append(_document(change, task))
    ids = {
        "project_id": _int(change.get("project_id")),
        "task_id": _int(change.get("task_id")),
        "annotation_id": _int(change.get("annotation_id")),
    }
    updated_at = _time(change.get("updated_at"))
    results = [r for r in _list(annotation.get("result")) if isinstance(r, dict)]
    # Each result is encoded once: the annotation's list and each region's list are joined
    # from the same pieces (byte for byte what encoding the lists would give).
    encoded = {id(r): _json(r) for r in results}
    records["annotations"].append(
        _with_id(
            "annotations",
            {
                "op": "upsert",
                **ids,
                "completed_by": _int(annotation.get("completed_by")),
                "was_cancelled": _bool(annotation.get("was_cancelled")),
                "ground_truth": _bool(annotation.get("ground_truth")),
                "lead_time_s": _float(annotation.get("lead_time")),
                "result": _json_list(results, encoded),
                "created_at": _time(annotation.get("created_at")),
                "updated_at": updated_at,
                "deleted_at": None,
            },
            (ids["project_id"], ids["annotation_id"]),
            updated_at,
        )
    )
    regions = _regions(results)
    page_list: list[PageGeometry] | None = None
    if any(_rectangle(r) is not None for r in regions.values()):
        page_list = pages.pages(task)
    for region_id, region in regions.items():
        records["extractions"].append(
            _extraction(ids, region_id, region, updated_at, _json_list(region, encoded))
        )
        box = _box(ids, region_id, region, updated_at, page_list, report)
        if box is not None:
            records["pdf_boxes"].append(box)


def _regions(results: list[dict[str, JSON]]) -> dict[str, list[dict[str, JSON]]]:
    regions: dict[str, list[dict[str, JSON]]] = {}
    for index, result in enumerate(results):
        rid = result.get("id")
        region_id = rid if isinstance(rid, str) and rid else f"#{index}"
        regions.setdefault(region_id, []).append(result)
    return regions


def _extraction(
    ids: Mapping[str, int | None],
    region_id: str,
    region: list[dict[str, JSON]],
    updated_at: datetime | None,
    value_json: str | None = None,
) -> Record:
    labels: list[str] = []
    texts: list[str] = []
    types: list[str] = []
    page_index: int | None = None
    for result in region:
        rtype = result.get("type")
        if isinstance(rtype, str):
            types.append(rtype)
        value = _dict(result.get("value")) or {}
        if isinstance(rtype, str):
            labels.extend(_strings(value.get(rtype)))
        for key in _TEXT_KEYS:
            texts.extend(_strings(value.get(key)))
        if page_index is None:
            page_index = _int(result.get("item_index"))
    return _with_id(
        "extractions",
        {
            "op": "upsert",
            **ids,
            "region_id": region_id,
            "page_index": page_index,
            "labels": labels,
            "text": "\n".join(texts) if texts else None,
            "result_types": types,
            "value": value_json if value_json is not None else _json(region),
            "updated_at": updated_at,
        },
        (ids["project_id"], ids["annotation_id"], region_id),
        updated_at,
    )


def _rectangle(region: list[dict[str, JSON]]) -> dict[str, JSON] | None:
    for result in region:
        if result.get("type") in _RECT_TYPES:
            return result
    return None


def _box(
    ids: Mapping[str, int | None],
    region_id: str,
    region: list[dict[str, JSON]],
    updated_at: datetime | None,
    page_list: list[PageGeometry] | None,
    report: Report,
) -> Record | None:
    result = _rectangle(region)
    if result is None:
        return None
    if page_list is None:
        report.boxes_without_geometry += 1
        return None
    value = _dict(result.get("value")) or {}
    index = _int(result.get("item_index"))
    page_index = 0 if index is None else index
    numbers = [_float(value.get(k)) for k in ("x", "y", "width", "height")]
    rotation = _float(value.get("rotation")) or 0.0
    image_rotation = _float(result.get("image_rotation")) or 0.0
    if (
        not 0 <= page_index < len(page_list)
        or any(n is None for n in numbers)
        or image_rotation % 360 != 0
    ):
        # No such page, no usable numbers, or drawn on an image turned in the editor: the
        # extraction keeps the raw value; a box in points would be a guess.
        report.boxes_skipped += 1
        return None
    x, y, w, h = (float(n) for n in numbers if n is not None)
    page = page_list[page_index]
    # The corners, and the bounds from them, as box_to_pdf and PdfBox give them (the same
    # arithmetic, the same order of the minima and maxima) without building either per row.
    tl, tr, br, bl = user_corners(x, y, w, h, rotation, page)
    labels = _strings(value.get(str(result.get("type"))))
    return _with_id(
        "pdf_boxes",
        {
            "op": "upsert",
            **ids,
            "region_id": region_id,
            "page_index": page_index,
            "label": labels[0] if labels else None,
            "x0": min(tl[0], tr[0], br[0], bl[0]),
            "y0": min(tl[1], tr[1], br[1], bl[1]),
            "x1": max(tl[0], tr[0], br[0], bl[0]),
            "y1": max(tl[1], tr[1], br[1], bl[1]),
            "polygon": [tl[0], tl[1], tr[0], tr[1], br[0], br[1], bl[0], bl[1]],
            "rotation": rotation,
            "page_box": page.box,
            "page_rotate": page.rotate,
            "page_x0": page.x0_pt,
            "page_y0": page.y0_pt,
            "page_width": page.width_pt,
            "page_height": page.height_pt,
            "geometry_source": page.source,
            "updated_at": updated_at,
        },
        (ids["project_id"], ids["annotation_id"], region_id),
        updated_at,
    )


def _project(project: Mapping[str, JSON]) -> Record:
    pid = _int(project.get("id"))
    updated_at = _time(project.get("updated_at"))
    return _with_id(
        "projects",
        {
            "op": "upsert",
            "project_id": pid,
            "title": _str(project.get("title")),
            "description": _str(project.get("description")),
            "created_at": _time(project.get("created_at")),
            "updated_at": updated_at,
            "deleted_at": None,
        },
        (pid,),
        updated_at,
    )


def _document(change: Mapping[str, JSON], task: Mapping[str, JSON]) -> Record:
    project_id = _int(change.get("project_id"))
    if project_id is None:
        project_id = _int(task.get("project"))
    task_id = _int(task.get("id"))
    data = _dict(task.get("data"))
    updated_at = _time(task.get("updated_at"))
    doc_id = data.get("doc_id") if data else None
    pages = data.get("pages") if data else None
    return _with_id(
        "documents",
        {
            "op": "upsert",
            "project_id": project_id,
            "task_id": task_id,
            "doc_id": None if doc_id is None else str(doc_id),
            "data": _json(data),
            "meta": _json(task.get("meta")),
            "page_count": len(pages) if isinstance(pages, list) else None,
            "created_at": _time(task.get("created_at")),
            "updated_at": updated_at,
            "deleted_at": None,
        },
        (project_id, task_id),
        updated_at,
    )


def _delete(
    table: str, change: Mapping[str, JSON], key: str | None, received_at: datetime
) -> Record:
    row: Record = {name.name: None for name in COLUMNS[table][1:]}  # all but change_id
    row["op"] = "delete"
    row["project_id"] = _int(change.get("project_id"))
    if "task_id" in row:
        row["task_id"] = _int(change.get("task_id"))
    if table == "annotations":
        row["annotation_id"] = _int(change.get("annotation_id"))
    deleted_at = received_at.astimezone(UTC)
    row["deleted_at"] = deleted_at
    parts = (row["project_id"],) if key is None else (row["project_id"], row[key])
    return _with_id(table, row, parts, deleted_at)


def _event(change: JSON, kind: str, action: object, received_at: datetime) -> Record:
    body = _json(change.get("body", change) if isinstance(change, dict) else change)
    project_id = _int(change.get("project_id")) if isinstance(change, dict) else None
    row: Record = {
        "op": "upsert",
        "project_id": project_id,
        "kind": kind,
        "action": action if isinstance(action, str) else None,
        "body": body,
        "received_at": received_at.astimezone(UTC),
    }
    # Payload-less and unknown events carry no identity of their own: the same body is one
    # record, however often it is delivered (the first delivery's time is kept).
    return _with_id("events", row, (kind, body), None)


def _with_id(table: str, row: Record, key: tuple[object, ...], version: datetime | None) -> Record:
    """``row`` with its ``change_id`` first. ``version``: ``updated_at``, or for a delete
    the time it was received."""
    # json.dumps([table, [str(k) ...], stamp], separators=(",", ":")), spelled out: the same
    # text (the same ids as ever) without building an encoder per row. All of it but the
    # key's last part (a region's id) is shared by an annotation's rows: it is made once.
    head, suffix = _id_frame(table, key[:-1], version, row.get("op") == "delete")
    last = key[-1]
    part = f'"{last}"' if type(last) is int else _quote(str(last))
    material = head + part + suffix
    return {"change_id": hashlib.sha256(material.encode()).hexdigest()[:32], **row}


@functools.lru_cache(maxsize=4096)
def _id_frame(
    table: str, head: tuple[object, ...], version: datetime | None, delete: bool
) -> tuple[str, str]:
    """The text of :func:`_with_id` before and after the key's last part. ``head`` holds
    ints, strings and None (ids read by ``_int``; never a bool, which equals an int here)."""
    stamp = f"delete@{_iso(version)}" if delete else _iso(version)
    parts = "".join((f'"{k}"' if type(k) is int else _quote(str(k))) + "," for k in head)
    return f"[{_quoted(table)},[{parts}", f"],{_quoted(stamp)}]"


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return _quote(text)


# -- reading values defensively ------------------------------------------------------------


def _dict(value: object) -> dict[str, JSON] | None:
    return value if isinstance(value, dict) else None


def _list(value: object) -> list[JSON]:
    return value if isinstance(value, list) else []


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(_strings(item))
        return out
    return []


def _time(value: object) -> datetime | None:
    return _parse_time(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)
def _parse_time(value: str) -> datetime | None:
    """Cached: a batch repeats the same few times (its change's version) on many rows."""
    return parse_time(value)


@functools.lru_cache(maxsize=4096)
def _iso(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).isoformat()


def _json_list(items: list[dict[str, JSON]], encoded: Mapping[int, str | None]) -> str:
    """``_json(items)``, from each item's own encoding."""
    if len(items) == 1:  # most regions are one result
        return "[" + cast(str, encoded[id(items[0])]) + "]"
    return "[" + ",".join([cast(str, encoded[id(item)]) for item in items]) + "]"


_quote: Final = json.encoder.encode_basestring_ascii


def _json(value: object) -> str | None:
    """Compact JSON with sorted keys (a canonical spelling)."""
    if value is None:
        return None
    return jsonio.dumps_sorted(value)
