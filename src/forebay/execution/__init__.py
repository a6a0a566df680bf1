"""Running handlers beyond one worker's event loop: in child processes, under supervision, and
programs as handlers.

* :mod:`.pool` — :class:`~forebay.execution.pool.HandlerPool`, N handler processes a worker
  sends its handler calls to (``forebay worker --processes N``,
  ``forebay serve --worker-processes N``), and their supervisor;
* :mod:`.child` — a handler process's main (``python -m forebay.execution.child``);
* :mod:`.wire` — what the pool and its processes say over their socket;
* :mod:`.command` — the subprocess runner: a queue whose jobs each run a program
  (``app.command(...)``), from the worker's own event loop;
* :mod:`.supervisor` — the app's worker supervised inside a server's event loop, in-process or
  with a pool, and its health for ``/readyz``;
* :mod:`.tuning` — the garbage-collector tuning long-running processes apply.

This package may import the core (app, worker, backends' seam, jobs, errors, logging formats,
lifecycle); the HTTP service and the CLI import it, never the other way round, so a handler
process never loads the web stack or the command line. The one import from below is
``app.command()``'s of :mod:`.command`, which imports only values and leaves.
"""
