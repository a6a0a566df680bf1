"""The HTTP intake service: ``forebay serve``, sources, API tokens, metrics.

* :mod:`forebay.service.api` — :func:`create_app`, the FastAPI app factory;
* :mod:`forebay.service.settings` — :class:`ServiceSettings`, read once from flags and
  ``FOREBAY_*`` variables;
* :mod:`forebay.service.sources` — :class:`Source` and its authentication
  (:class:`SharedSecret`, :class:`HmacSignature`);
* :mod:`forebay.service.metrics` — every Prometheus metric name, and the observer that feeds them;
* :mod:`forebay.service.dashboard` — the web dashboard at ``/`` (static pages over the ``/v1`` API);
* :mod:`forebay.service.command` — the ``forebay serve`` command (uvicorn).

Importing this package is cheap (no web framework): apps that declare sources import it, and so
do worker-only processes. :func:`create_app` loads FastAPI on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forebay.service.settings import ApiToken, Scope, ServiceSettings
from forebay.service.sources import HmacSignature, SharedSecret, Source, SourceAuth

if TYPE_CHECKING:
    from forebay.service.api import create_app

__all__ = [
    "ApiToken",
    "HmacSignature",
    "Scope",
    "ServiceSettings",
    "SharedSecret",
    "Source",
    "SourceAuth",
    "create_app",
]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from forebay.service.api import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
