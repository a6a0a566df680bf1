"""Label Studio → dataset (system of record) + PostgreSQL staging tables.

Start it with::

    FOREBAY_LABELSTUDIO_SECRET=change-me forebay serve forebay.contrib.labelstudio:app

``app`` is built on first access from the environment (see :class:`LabelStudioSettings`);
importing this package builds nothing. In code, call :func:`build_app` with explicit settings.

* :mod:`.events` — webhook bodies → changes (job payloads) and their keys;
* :mod:`.records` — changes → table records; :mod:`.geometry`, :mod:`.pages` — PDF points;
* :mod:`.stage` — the PostgreSQL staging schema (``sql/``);
* :mod:`.pipeline` — the source, the batch handler and :func:`build_app`;
* :mod:`.reconcile` — recovering missed events from Label Studio's API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forebay.contrib.labelstudio.settings import LabelStudioSettings

if TYPE_CHECKING:
    from forebay.app import Forebay
    from forebay.contrib.labelstudio.pipeline import LabelStudioPipeline, build_app

__all__ = ["LabelStudioPipeline", "LabelStudioSettings", "app", "build_app"]

_app: Forebay | None = None


def __getattr__(name: str) -> object:
    global _app
    if name == "app":
        if _app is None:
            from forebay.contrib.labelstudio.pipeline import build_app

            _app = build_app()
        return _app
    if name in ("build_app", "LabelStudioPipeline"):
        from forebay.contrib.labelstudio import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
