"""The worker: leases jobs, runs handlers, settles outcomes, keeps leases alive, shuts down cleanly.

Per worker process:

* one **lane** per queue leases up to its free concurrency in one call and starts one task per
  job (or per batch) (:mod:`.lanes`; crash isolation: :mod:`.isolation`); a handler is called
  one way everywhere (:mod:`.calls`);
* the **settler** collects outcomes and writes them in batches through the one group-commit
  mechanism, at most one flush in flight (:mod:`.settler`); what an outcome does to its job is
  one pure decision (:mod:`.decision`), made once; a recorded outcome is reported to observers,
  among them the one that logs it (:mod:`.outcome_logger`); the queues' hooks then run in
  tasks of their own (:mod:`.hooks`);
* named background loops: **heartbeat**, **reclaimer**, **pruner** (:mod:`.maintenance`), the
  **scheduler**, which fires the stored schedules' due ticks (:mod:`.scheduler`), and the
  **registry**, which keeps the worker's record in the store for every node to list
  (:mod:`.registry`);
* :class:`Worker` (:mod:`.worker`) puts them together and shuts down gracefully.

Policy lives here, not in backends: outcome classification (DESIGN §3.4), backoff, the
crash-loop limit (``deliveries > max_deliveries`` at lease time), crash isolation and the
hooks (``on_success``, ``on_failure``, ``on_exhausted``).

Imports only the core (backends' seam, jobs, queue config, observers, errors, lifecycle);
running handlers in other processes is :mod:`forebay.execution`'s, above this package.
"""

from __future__ import annotations

from forebay.worker.settings import WorkerSettings
from forebay.worker.worker import Worker

__all__ = ["Worker", "WorkerSettings"]
