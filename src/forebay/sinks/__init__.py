"""Sinks: where handlers write, idempotently (see :mod:`forebay.sinks.base`).

* :mod:`forebay.sinks.postgres` — :class:`PostgresSink`, batched UPSERTs guarded by a version
  column, one transaction per batch (``forebay[postgres]``);
* :mod:`forebay.sinks.dataset` — :class:`DatasetSink`, parquet shards in the Hugging Face
  dataset layout on a local folder or any fsspec URL (``forebay[parquet]``);
* :mod:`forebay.sinks.hub` — :class:`HubSync`, commits a dataset folder to the Hugging Face
  Hub at a bounded rate (``forebay[hf]``).

Importing this package imports none of the optional dependencies.
"""

from forebay.sinks.base import WRITE_OUTCOMES, Sink, WriteOutcome, WriteResult

__all__ = ["WRITE_OUTCOMES", "Sink", "WriteOutcome", "WriteResult"]
