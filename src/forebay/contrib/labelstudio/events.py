"""Label Studio webhook bodies → changes (one job payload each) and their keys.

Label Studio sends ``{"action": ..., <object keys>}`` once per event, unsigned, and may leave out
any field (``send_payload=false`` sends the action alone). :func:`split_event` turns one body
into **changes**, the payloads of forebay jobs, one per object:

=================  =====================================  ====================================
kind               made from                              key
=================  =====================================  ====================================
``annotation``     ANNOTATION_CREATED / _UPDATED,         ``(project, task, annotation,
                   ANNOTATIONS_CREATED (bulk: lists       updated_at)``
                   under the singular keys), reconcile
``task``           TASKS_CREATED, reconcile               ``(project, task, -, updated_at)``
``project``        PROJECT_UPDATED                        ``(project, -, -, updated_at)``
``annotation_deleted``  ANNOTATIONS_DELETED (ids only)    none (each delivery a delete)
``task_deleted``   TASKS_DELETED (ids only)               none (each delivery a delete)
``project_deleted``  PROJECT_DELETED                      none (each delivery a delete)
``empty``          a body with the action alone           none (recovered by reconcile)
``unknown``        any other action                       none (stored and reported)
=================  =====================================  ====================================

The same object reaches forebay with the same key whether a webhook or the reconciliation
poller brought it, so a repeated delivery is deduplicated at enqueue. A key is given only when
every part of it is known; a change without one is still processed, and the sinks' own
``updated_at`` guard keeps it harmless.

Deletes get no key. Label Studio sends them with ids only — no version, no time — and reuses
ids (on SQLite a new task may get the id of a deleted one), so a second delete of the same id
is a new event that a key would wrongly take for a repeat. Each delivery is its own job, dated
by when forebay received it; the sinks keep a key's first tombstone (see ``records`` and
``stage``), so a delete received again changes nothing that is still deleted.

Credentials never leave this module: projects are reduced to a few known fields, and every
other object is scrubbed, at any depth, of the keys whose name holds a credential word
(:func:`names_a_credential`), before the change is stored as a job. Annotation and task
changes say so (``"scrubbed": SCRUB_RULE``), so that the handler scrubs again only what was
not (a job stored by an earlier forebay, or enqueued from code).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final, cast

from forebay.errors import InvalidPayload
from forebay.job import JSON

__all__ = [
    "KNOWN_ACTIONS",
    "SCRUB_RULE",
    "annotation_change",
    "change_key",
    "names_a_credential",
    "normalise_time",
    "parse_time",
    "scrub",
    "split_event",
    "task_change",
]

KNOWN_ACTIONS: Final = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_CREATED",
        "ANNOTATIONS_DELETED",
        "TASKS_CREATED",
        "TASKS_DELETED",
        "PROJECT_CREATED",
        "PROJECT_UPDATED",
        "PROJECT_DELETED",
    }
)

KEY_PREFIX: Final = "labelstudio"
SCRUB_RULE: Final = 1
"""The version of the scrubbing rule a change was scrubbed by (raise it when the rule changes:
changes scrubbed by an older one are scrubbed again)."""

_PROJECT_FIELDS: Final = ("id", "title", "description", "created_at", "updated_at")
_TASK_FIELDS: Final = ("id", "project", "data", "meta", "created_at", "updated_at", "inner_id")
_ANNOTATION_FIELDS: Final = (
    "id",
    "task",
    "project",
    "result",
    "was_cancelled",
    "ground_truth",
    "lead_time",
    "completed_by",
    "updated_by",
    "created_at",
    "updated_at",
)
CREDENTIAL_PARTS: Final = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "credential",
    "authorization",
    "authorisation",
    "cookie",
    "apikey",
    "accesskey",
    "privatekey",
    "sshkey",
    "sessionid",
    "taskdatalogin",
)
"""A key whose name, lower-cased without separators, contains one of these names a
credential (``aws_secret_access_key``, ``X-Forebay-Secret``, ``apiKey``, ``Set-Cookie``)."""
CREDENTIAL_WORDS: Final = ("auth", "pwd")
"""...or one of whose words is one of these (``basic_auth``; not ``author``)..."""
CREDENTIAL_SUFFIX: Final = "token"
"""...or one of whose words ends in this (``token``, ``access_token``, ``X-Auth-Token``,
``csrftoken``, ``token_count``; not ``tokens``, the words of a tokenised text)."""

_WORDS: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


@functools.lru_cache(maxsize=8192)
def names_a_credential(key: str) -> bool:
    """Whether a JSON key names a credential, in any case and with any separator.

    Words are split at any character that is not a letter or digit and where lower case
    turns to upper (``refreshToken``: refresh, token). See :data:`CREDENTIAL_PARTS`,
    :data:`CREDENTIAL_WORDS` and :data:`CREDENTIAL_SUFFIX`. Erring on the side of dropping:
    a value stored under such a key is lost to the dataset, a credential stored is leaked.
    """
    words = [w.lower() for w in _WORDS.findall(key)]
    glued = "".join(words)
    return (
        any(part in glued for part in CREDENTIAL_PARTS)
        or any(w in CREDENTIAL_WORDS for w in words)
        or any(w.endswith(CREDENTIAL_SUFFIX) for w in words)
    )


def split_event(body: JSON) -> list[JSON]:
    """The changes one webhook body holds (see the module docstring).

    Raises InvalidPayload only when the body is not a JSON object: anything an object holds,
    known or not, becomes at least one change.
    """
    if not isinstance(body, dict):
        raise InvalidPayload(
            f"a Label Studio webhook body is a JSON object, got {type(body).__name__}"
        )
    action = body.get("action")
    name = action if isinstance(action, str) else None
    if name is None or name not in KNOWN_ACTIONS:
        return [{"kind": "unknown", "action": name, "body": scrub(body)}]
    if not (body.keys() - {"action"}):
        return [{"kind": "empty", "action": name}]
    project = _project(body.get("project"))
    project_id = _id(project) if project else None
    changes = _SPLITTERS[name](body, name, project, project_id)
    return changes or [{"kind": "empty", "action": name}]


def _annotations(
    body: Mapping[str, JSON], action: str, project: dict[str, JSON] | None, project_id: int | None
) -> list[JSON]:
    tasks = {_id(t): t for t in _items(body, "task", "tasks") if _id(t) is not None}
    changes: list[JSON] = []
    for annotation in _items(body, "annotation", "annotations"):
        task_id = _ref(annotation.get("task"))
        task = tasks.get(task_id) if task_id is not None else None
        if task is None and len(tasks) == 1 and task_id is None:
            task = next(iter(tasks.values()))
        changes.append(annotation_change(action, project, task, annotation, project_id=project_id))
    if not changes:  # an annotation event that carries only its tasks
        changes = [task_change(action, project, t, project_id=project_id) for t in tasks.values()]
    return changes


def _tasks(
    body: Mapping[str, JSON], action: str, project: dict[str, JSON] | None, project_id: int | None
) -> list[JSON]:
    return [
        task_change(action, project, task, project_id=project_id)
        for task in _items(body, "task", "tasks")
    ]


def _deleted_annotations(
    body: Mapping[str, JSON], action: str, project: dict[str, JSON] | None, project_id: int | None
) -> list[JSON]:
    changes: list[JSON] = []
    for item in _items(body, "annotation", "annotations"):
        pid = project_id if project_id is not None else _ref(item.get("project"))
        changes.append(
            {
                "kind": "annotation_deleted",
                "action": action,
                "project_id": pid,
                "annotation_id": _id(item),
                "task_id": _ref(item.get("task")),
            }
        )
    return changes


def _deleted_tasks(
    body: Mapping[str, JSON], action: str, project: dict[str, JSON] | None, project_id: int | None
) -> list[JSON]:
    changes: list[JSON] = []
    for item in _items(body, "task", "tasks"):
        pid = project_id if project_id is not None else _ref(item.get("project"))
        changes.append(
            {"kind": "task_deleted", "action": action, "project_id": pid, "task_id": _id(item)}
        )
    return changes


def _project_updated(
    body: Mapping[str, JSON], action: str, project: dict[str, JSON] | None, project_id: int | None
) -> list[JSON]:
    if project is None:
        return []
    return [{"kind": "project", "action": action, "project_id": project_id, "project": project}]


def _project_deleted(
    body: Mapping[str, JSON], action: str, project: dict[str, JSON] | None, project_id: int | None
) -> list[JSON]:
    if project_id is None:
        return []
    return [{"kind": "project_deleted", "action": action, "project_id": project_id}]


_SPLITTERS: Final = {
    "ANNOTATION_CREATED": _annotations,
    "ANNOTATION_UPDATED": _annotations,
    "ANNOTATIONS_CREATED": _annotations,
    "ANNOTATIONS_DELETED": _deleted_annotations,
    "TASKS_CREATED": _tasks,
    "TASKS_DELETED": _deleted_tasks,
    "PROJECT_CREATED": _project_updated,
    "PROJECT_UPDATED": _project_updated,
    "PROJECT_DELETED": _project_deleted,
}


def annotation_change(
    action: str,
    project: Mapping[str, JSON] | None,
    task: Mapping[str, JSON] | None,
    annotation: Mapping[str, JSON],
    *,
    project_id: int | None = None,
) -> JSON:
    """The change for one annotation (with its task, when known)."""
    clean = _pick(annotation, _ANNOTATION_FIELDS)
    clean_task = _pick(task, _TASK_FIELDS) if task is not None else None
    task_id = _ref(annotation.get("task"))
    if task_id is None and clean_task is not None:
        task_id = _id(clean_task)
    pid = _first_id(project_id, project, annotation.get("project"), task)
    return {
        "kind": "annotation",
        "action": action,
        "project_id": pid,
        "task_id": task_id,
        "annotation_id": _id(clean),
        "updated_at": normalise_time(clean.get("updated_at")),
        "project": _project(project),
        "task": clean_task,
        "annotation": clean,
        "scrubbed": SCRUB_RULE,
    }


def task_change(
    action: str,
    project: Mapping[str, JSON] | None,
    task: Mapping[str, JSON],
    *,
    project_id: int | None = None,
) -> JSON:
    """The change for one task (a document)."""
    clean = _pick(task, _TASK_FIELDS)
    return {
        "kind": "task",
        "action": action,
        "project_id": _first_id(project_id, project, task.get("project"), None),
        "task_id": _id(clean),
        "updated_at": normalise_time(clean.get("updated_at")),
        "project": _project(project),
        "task": clean,
        "scrubbed": SCRUB_RULE,
    }


def change_key(change: JSON) -> str | None:
    """The idempotency key of a change; None when a part of it is unknown, and for deletes."""
    if not isinstance(change, dict):
        return None
    kind = change.get("kind")
    parts: tuple[object, ...]
    if kind == "annotation":
        parts = (change.get("project_id"), change.get("task_id"), change.get("annotation_id"))
        version = change.get("updated_at")
    elif kind == "task":
        parts = (change.get("project_id"), change.get("task_id"), "-")
        version = change.get("updated_at")
    elif kind == "project":
        project = change.get("project")
        parts = (change.get("project_id"), "-", "-")
        version = project.get("updated_at") if isinstance(project, dict) else None
        version = normalise_time(version)
    else:  # deletes (see the module docstring), empty and unknown actions
        return None
    if version is None or any(p is None for p in parts):
        return None
    return ":".join(str(p) for p in (KEY_PREFIX, *parts, version))


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (no zone: UTC), or None if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11+ reads "Z" and short fractions
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def normalise_time(value: object) -> str | None:
    """An ISO 8601 time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), or None if it is not one.

    Label Studio writes ``...Z``; other clients may write ``+00:00`` or omit fractions: keys
    and comparisons must not depend on the spelling.
    """
    parsed = parse_time(value)
    return None if parsed is None else parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scrub(value: JSON) -> JSON:
    """``value`` without keys that name credentials, at any depth.

    Only what holds such a key is copied: the rest is shared with ``value`` (bodies are parsed
    fresh for every request, and big annotation bodies rarely hold a credential). A value with
    no such key is returned as it is without a copy (its dicts' keys are judged once per shape).
    """
    if isinstance(value, dict | list) and _may_name_a_secret(value):
        return _scrub(value)
    return value


def _may_name_a_secret(value: JSON) -> bool:
    """Whether :func:`_scrub` would drop a key of ``value`` (or fail on one that is not a
    string): a key naming a credential in a dict it reaches (dicts and lists, at any depth).

    Each dict's keys are judged once per tuple of keys: the results of an annotation, however
    many, share a few shapes, so only their values are walked.
    """
    if isinstance(value, dict):
        if _keys_may_name_a_secret(tuple(value)):
            return True
        values: Iterable[JSON] = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return False
    for item in values:  # noqa: SIM110 (a loop: no generator per dict)
        if isinstance(item, _CONTAINERS) and _may_name_a_secret(item):
            return True
    return False


_CONTAINERS: Final = (dict, list)  # what _scrub walks into (a tuple: quicker than dict | list)


@functools.lru_cache(maxsize=4096)
def _keys_may_name_a_secret(keys: tuple[object, ...]) -> bool:
    return any(not isinstance(k, str) or names_a_credential(k) for k in keys)


def _scrub(value: JSON) -> JSON:
    if isinstance(value, dict):
        changed = False
        out: dict[str, JSON] = {}
        for k, v in value.items():
            if names_a_credential(k):
                changed = True
                continue
            if isinstance(v, dict | list):
                clean = _scrub(v)
                changed = changed or clean is not v
                out[k] = clean
            else:
                out[k] = v
        return out if changed else value
    if isinstance(value, list):
        items: list[JSON] | None = None
        for i, v in enumerate(value):
            if isinstance(v, dict | list):
                clean = _scrub(v)
                if clean is not v:
                    if items is None:
                        items = list(value)
                    items[i] = clean
        return value if items is None else items
    return value


# -- reading defensively -----------------------------------------------------------------


def _project(value: object) -> dict[str, JSON] | None:
    if not isinstance(value, dict):
        return None
    return _pick(cast(Mapping[str, JSON], value), _PROJECT_FIELDS)


def _pick(obj: Mapping[str, JSON], fields: Iterable[str]) -> dict[str, JSON]:
    """The ``fields`` of ``obj``, scrubbed (one search of their text clears them all; what
    is not picked, e.g. a task's ``comment_authors``, is not searched)."""
    picked: JSON = {name: obj[name] for name in fields if name in obj}
    return cast(dict[str, JSON], scrub(picked))


def _items(body: Mapping[str, JSON], singular: str, plural: str) -> list[dict[str, JSON]]:
    """The objects under ``singular`` (a list in bulk events, or one object) or ``plural``."""
    found: list[dict[str, JSON]] = []
    for name in (singular, plural):
        value = body.get(name)
        values = value if isinstance(value, list) else [value]
        found.extend(v for v in values if isinstance(v, dict))
    return found


def _id(obj: Mapping[str, JSON] | None) -> int | None:
    return None if obj is None else _ref(obj.get("id"))


def _ref(value: object) -> int | None:
    """An object id: an int, a digit string, or an object with an ``id``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, dict):
        return _ref(value.get("id"))
    return None


def _first_id(
    project_id: int | None,
    project: Mapping[str, JSON] | None,
    reference: object,
    task: Mapping[str, JSON] | None,
) -> int | None:
    if project_id is not None:
        return project_id
    for candidate in (_id(project), _ref(reference), _ref(task.get("project")) if task else None):
        if candidate is not None:
            return candidate
    return None
