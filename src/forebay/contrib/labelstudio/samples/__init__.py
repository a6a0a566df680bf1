"""Webhook bodies captured from a real Label Studio 1.23 (``real_*``) and the examples of
Label Studio's webhook reference (``doc_*``), used by ``forebay labelstudio demo`` and the tests.

:data:`ORDER` is the order they were sent in (by time); :func:`load` reads one.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Final

from forebay.job import JSON

__all__ = ["ORDER", "load", "page_geometry", "raw"]

ORDER: Final = (
    "real_tasks_created_single.json",
    "real_annotation_created_rectanglelabels_multipage.json",
    "real_annotation_created_send_payload_false.json",
    "real_annotation_updated.json",
    "doc_annotation_updated_rectanglelabels.json",
    "real_annotations_deleted_single.json",
    "real_tasks_deleted_single.json",
    "real_project_updated.json",
)


def raw(name: str) -> bytes:
    """One sample body, byte for byte as Label Studio sent it."""
    return resources.files(__name__).joinpath(name).read_bytes()


def load(name: str) -> JSON:
    """One sample body, parsed."""
    parsed: JSON = json.loads(raw(name))
    return parsed


def page_geometry() -> dict[str, list[dict[str, JSON]]]:
    """Page geometry of the sample documents by ``doc_id`` (US Letter pages, in points)."""
    letter: dict[str, JSON] = {"width": 612, "height": 792, "rotate": 0, "box": "MediaBox"}
    return {"doc1": [letter, letter], "doc3": [letter]}
