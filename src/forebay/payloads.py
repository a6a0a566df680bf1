"""Payload models: a queue's pydantic model, checked at every enqueue and parsed for its handler.

A queue declared with ``@app.handler("orders", payload=Order)`` (or ``app.queue("orders",
payload=Order)`` in a process that only produces) has a payload model. Then:

* every enqueue through the app (``enqueue``, ``enqueue_many``, ``enqueue_sync``, the HTTP
  intake and sources, ``forebay enqueue --app``) validates each payload of that queue from its
  JSON text (pydantic's JSON mode, as the handler will read it) before anything is stored, and
  refuses a batch with a bad payload as a whole (:class:`~forebay.PayloadValidationError`,
  carrying pydantic's field errors);
* what is stored is the model's own JSON (``model_dump_json()``, the text of
  ``model_dump(mode="json")``): one canonical form, whether the producer gave a model instance
  or plain data;
* in the process that runs the handler, ``job.payload`` is replaced by the parsed model
  instance just before the call (from the stored text, parsed once). A stored payload the model
  no longer accepts (a producer that did not declare the model, or a model changed since) cannot
  succeed on a retry: that job is dead-lettered at once with the field errors.

A queue without a model pays one ``is None`` check per enqueue batch and per handler call.
pydantic is imported only by the apps that declare a model (they import it themselves).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeAlias

from forebay.errors import (
    ConfigError,
    InvalidPayload,
    PayloadValidationError,
    PermanentError,
    field_error_summary,
)
from forebay.job import Job, NewJob, PayloadText
from forebay.jsonio import unicode_only

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

__all__ = ["PayloadModel", "check_model", "field_errors", "read_payloads", "validate_jobs"]

PayloadModel: TypeAlias = "type[BaseModel]"
"""A pydantic (v2) model class a queue's payloads must match."""


def check_model(queue: str, model: object) -> None:
    """Refuse (ConfigError) a ``payload=`` that is not a pydantic model class."""
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(
            f"queue {queue!r}: payload= must be a pydantic model class (a BaseModel subclass), "
            f"got {model!r}"
        )


def validate_jobs(jobs: Sequence[NewJob], models: Mapping[str, PayloadModel]) -> list[NewJob]:
    """``jobs`` with every payload of a queue in ``models`` validated and stored as the model's
    JSON; PayloadValidationError for the first one refused (so the batch stores nothing)."""
    count = len(jobs)
    checked = list(jobs)
    for index, job in enumerate(checked):
        model = models.get(job.queue)
        if model is not None:
            checked[index] = _canonical(job, model, index, count)
    return checked


def _canonical(job: NewJob, model: PayloadModel, index: int, count: int) -> NewJob:
    from pydantic import ValidationError

    try:
        text = model.model_validate_json(job.payload_json).model_dump_json()
    except ValidationError as exc:
        raise PayloadValidationError(
            job.queue, model.__name__, field_errors(exc), index=index, count=count
        ) from None
    try:
        unicode_only(text)
    except ValueError:
        raise InvalidPayload(
            f"the {model.__name__} of queue {job.queue!r} wrote a lone surrogate in its JSON"
        ) from None
    # Read back only if someone reads the returned job's payload, as a stored job is.
    return replace(job, payload_json=text, payload=PayloadText(text))


def field_errors(exc: ValidationError) -> list[dict[str, object]]:
    """pydantic's errors as JSON values (its ``ctx`` may hold exception objects)."""
    errors: list[dict[str, object]] = json.loads(exc.json(include_url=False))
    return errors


def read_payloads(model: PayloadModel, jobs: Sequence[Job]) -> dict[int, BaseException]:
    """Give each job its payload as a ``model`` instance (parsed from the stored text); the
    jobs whose stored payload the model refuses get a PermanentError instead (by job id)."""
    from pydantic import ValidationError

    refused: dict[int, BaseException] = {}
    for job in jobs:
        try:
            # Replaced in place: the handler, job.cancel flags and the on_exhausted hook all
            # see the one object the worker holds.
            job.payload = model.model_validate_json(job.payload_text)  # type: ignore[assignment]
        except ValidationError as exc:
            refused[job.id] = PermanentError(
                f"the stored payload does not match {model.__name__}, the payload model of "
                f"queue {job.queue!r} (it was enqueued without that check): "
                f"{field_error_summary(field_errors(exc))}"
            )
    return refused
