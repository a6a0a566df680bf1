"""Running the app's handlers for the HTTP service: in its event loop or in child processes.

* :mod:`.workers` — the app's worker supervised inside the service's event loop, in-process or
  with handler processes, and its health for ``/readyz``;
* :mod:`.handler_process` — the handler processes of ``forebay serve --worker-processes N``;
* :mod:`.tuning` — the garbage-collector tuning a long-running server process applies.

The HTTP service itself is :mod:`forebay.http`, and ``forebay serve`` is
:mod:`forebay.cli.serve`. These modules import the core only, never the HTTP service or the CLI.
"""
