"""The HTTP intake: one FastAPI app for one :class:`~forebay.Forebay`, served by ``forebay serve``
(docs/http.md) or mounted by an app of your own.

* :mod:`.api` — :func:`create_app`, the app factory; :mod:`.service`, what its routes share
  and the lifespan that starts and stops the app's workers;
* the routes, by resource: :mod:`.intake` (``POST /v1/queues/{queue}/jobs``), :mod:`.sources`
  (webhooks), :mod:`.jobs`, :mod:`.queues`, :mod:`.dead` (dead letters), :mod:`.probes`
  (``/healthz``, ``/readyz``, ``/metrics``) and :mod:`.dashboard` (the page at ``/``);
* what they share: :mod:`.models` (bodies and parameters), :mod:`.errors` (every error answer),
  :mod:`.openapi`, :mod:`.responses`, :mod:`.body` (reading bodies within a limit),
  :mod:`.auth` (API tokens and their tenants), :mod:`.intake_limits` (each token's and source's
  request rate), :mod:`.cross_site` (CSRF, DNS rebinding, CORS) and :mod:`.intake_metrics`;
* :mod:`.settings` — :class:`ServiceSettings`, read once from ``FOREBAY_*`` variables and flags;
* :mod:`.connections` — the bounds ``forebay serve`` keeps on slow and idle connections (a
  uvicorn protocol).

This package builds on the core (the app, sources, metrics, logs) and on the workers it runs;
only the CLI (``forebay serve``, the composition root) imports it. Importing the package or its
settings does not load the web framework: :func:`create_app` is loaded on first use, so the other
commands start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forebay.http.settings import ApiToken, Scope, ServiceSettings

if TYPE_CHECKING:
    from forebay.http.api import create_app

__all__ = ["ApiToken", "Scope", "ServiceSettings", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from forebay.http.api import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
