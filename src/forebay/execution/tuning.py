"""Process tuning a long-running forebay process applies once it has started: ``forebay serve``,
``forebay worker`` and every handler process (:mod:`forebay.execution.child`). A worker run
inside an application's own process (``app.run_worker()``) leaves the process's collector to the
application.

CPython's cyclic garbage collector runs a full collection, which walks every tracked object in
the process, each time enough objects have survived the younger generations. A server that keeps
requests in flight while their jobs are committed makes many short-lived survivors, so with the
default thresholds it ran a full collection over the whole heap (the web framework, the schemas,
the metrics) several times a second, a sixth of the event loop's time under load. Two standard
remedies, applied when the service has started:

* :func:`gc.freeze` moves what exists by then (imports, the app, routes, schemas) to a permanent
  generation that collections skip;
* the first generation's threshold is raised from 700 to 10,000 allocations, so short-lived
  objects (a request's) mostly die before any collection sees them.

A process whose first threshold is not the interpreter's default has chosen its own: it is left
alone.
"""

from __future__ import annotations

import gc

_DEFAULT_GEN0 = 700
GEN0_THRESHOLD = 10_000


def tune_gc() -> bool:
    """Freeze the start-up heap and raise the first threshold; False when left alone."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 != _DEFAULT_GEN0 or not gc.isenabled():
        return False
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return True
