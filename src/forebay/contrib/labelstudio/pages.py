"""Where a task's page geometry comes from: the task data, or the PDF itself.

In order:

1. ``task.data.page_geometry``: a list, one object per page, of
   ``{"width": pt, "height": pt, "rotate": 0, "x0": 0, "y0": 0, "box": "CropBox"}``
   (write it when you import tasks; it costs nothing at ingest time);
2. ``task.data.pdf``: a local path or an fsspec URL (``s3://``, ``gs://``, ``file://``...) of
   the PDF, read with pypdf (``forebay[pdf]``);
3. ``<pdf_folder>/<task.data.doc_id>.pdf`` when a PDF folder (or fsspec URL) is configured.

Without any of these a task has no page geometry: its extractions are still stored (in
percent, as Label Studio gives them) but it gets no ``pdf_boxes`` rows. A PDF that is named
but cannot be read raises :class:`~forebay.TransientError`, so the job is retried rather than
losing its boxes.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from threading import Lock

from forebay.contrib.labelstudio.geometry import PageGeometry, pages_from_pdf
from forebay.errors import MissingExtra, TransientError
from forebay.job import JSON

__all__ = ["PageSource"]

log = logging.getLogger("forebay.labelstudio")

_REMOTE_SCHEMES = ("file://", "s3://", "gs://", "gcs://", "az://", "abfs://", "hf://", "memory://")


class PageSource:
    """Finds the page geometry of a task; caches what it read from PDFs. Thread-safe."""

    def __init__(self, pdf_folder: str | os.PathLike[str] | None = None, cache_size: int = 256):
        self.pdf_folder = None if pdf_folder is None else os.fspath(pdf_folder)
        self._cache: OrderedDict[str, list[PageGeometry] | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    def pages(self, task: Mapping[str, JSON] | None) -> list[PageGeometry] | None:
        """The geometry of each page of ``task``, or None when nothing says what it is."""
        if task is None:
            return None
        data = task.get("data")
        if not isinstance(data, dict):
            return None
        given = data.get("page_geometry")
        if isinstance(given, list) and given:
            try:
                return [PageGeometry.from_mapping(p, source="task") for p in given]
            except ValueError as exc:
                log.warning("task %s: ignoring its page_geometry: %s", task.get("id"), exc)
        pdf = data.get("pdf")
        if isinstance(pdf, str) and (pdf.startswith(_REMOTE_SCHEMES) or os.path.isabs(pdf)):
            return self._read(pdf, required=True)
        doc_id = data.get("doc_id")
        if self.pdf_folder is not None and isinstance(doc_id, str | int) and _safe(str(doc_id)):
            return self._read(f"{self.pdf_folder.rstrip('/')}/{doc_id}.pdf", required=False)
        return None

    def _read(self, location: str, *, required: bool) -> list[PageGeometry] | None:
        with self._lock:
            if location in self._cache:
                self._cache.move_to_end(location)
                return self._cache[location]
        pages = _load(location, required=required)
        with self._lock:
            self._cache[location] = pages
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return pages


def _safe(doc_id: str) -> bool:
    """A doc id usable as a file name (no path tricks)."""
    return bool(doc_id) and "/" not in doc_id and "\\" not in doc_id and doc_id not in (".", "..")


def _load(location: str, *, required: bool) -> list[PageGeometry] | None:
    try:
        data = _read_bytes(location)
    except FileNotFoundError:
        if required:
            raise TransientError(f"the task's PDF {location} does not exist (yet)") from None
        return None
    except OSError as exc:
        raise TransientError(f"could not read the PDF {location}: {exc}") from exc
    try:
        return pages_from_pdf(data)
    except MissingExtra:
        raise
    except Exception as exc:  # pypdf raises many types for a broken file
        log.warning("could not read page geometry from %s: %s", location, exc)
        return None


def _read_bytes(location: str) -> bytes:
    if "://" not in location or location.startswith("file://"):
        return Path(location.removeprefix("file://")).read_bytes()
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra("parquet", "fsspec") from None
    with fsspec.open(location, "rb") as stream:
        data: bytes = stream.read()
    return data
