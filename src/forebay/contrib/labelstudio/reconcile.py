"""Reconciliation: recover the webhook events Label Studio never retried.

Label Studio posts each webhook once (1 s timeout, no retries) and switches a webhook off after
repeated failures. The reconciler reads, for each project, the tasks changed since a stored
watermark from Label Studio's API::

    GET /api/tasks?project=P&fields=all&page=N&page_size=100&query={filters: updated_at > W}

and enqueues each task and each of its annotations as the same changes, **with the same keys**,
as the webhook would have: an event that did arrive is deduplicated at enqueue (or, once its
job is pruned, skipped by the sinks' version guards); one that did not is recovered. The
watermark (the newest ``updated_at`` seen, per project) is saved after each page is enqueued,
and the next poll starts a little before it, so a task updated in the same instant is not
missed. It also turns our webhook back on when Label Studio has switched it off.

Deletes are not visible in the API (a deleted task is gone); they come only by webhook.

Run it with ``forebay labelstudio reconcile`` (once), or every N seconds: ``--every N`` (or
``FOREBAY_LABELSTUDIO_RECONCILE_EVERY_S`` on the service) stores a schedule
(:mod:`forebay.schedules`) named ``labelstudio.reconcile`` whose ticks are jobs on the queue of
that name; the service's workers fire it, each tick once, and run the passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from forebay.app import Forebay
from forebay.contrib.labelstudio.events import (
    annotation_change,
    change_key,
    normalise_time,
    task_change,
)
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.errors import ConfigError, PermanentError, TransientError
from forebay.job import JSON, Job, NewJob
from forebay.schedules import Schedule

__all__ = [
    "RECONCILE_QUEUE",
    "LabelStudioClient",
    "ReconcileResult",
    "Reconciler",
    "install_reconcile",
    "reconcile_schedule",
    "schedule_reconcile",
]

log = logging.getLogger("forebay.labelstudio")

RECONCILE_QUEUE: Final = "labelstudio.reconcile"
ACTION: Final = "RECONCILE"


class LabelStudioClient:
    """The few Label Studio API calls reconciliation needs (blocking; call from a thread).

    ``token``: a legacy API token (sent as ``Token …``) or a personal access token (a JWT,
    exchanged for a short-lived access token at ``/api/token/refresh``).
    """

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"Label Studio URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._access: tuple[str, float] | None = None

    def get(self, path: str, **params: object) -> JSON:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._call("GET", f"{path}?{query}" if query else path)

    def patch(self, path: str, body: Mapping[str, JSON]) -> JSON:
        return self._call("PATCH", path, body)

    def _authorization(self) -> str:
        if self.token.count(".") != 2:
            return f"Token {self.token}"
        if self._access is None or self._access[1] < time.monotonic():
            answer = self._send("POST", "/api/token/refresh", {"refresh": self.token}, None)
            access = answer.get("access") if isinstance(answer, dict) else None
            if not isinstance(access, str):
                raise PermanentError("Label Studio did not exchange the personal access token")
            self._access = (access, time.monotonic() + 240)  # access tokens live ~5 minutes
        return f"Bearer {self._access[0]}"

    def _call(self, method: str, path: str, body: Mapping[str, JSON] | None = None) -> JSON:
        return self._send(method, path, body, self._authorization())

    def _send(
        self, method: str, path: str, body: Mapping[str, JSON] | None, authorization: str | None
    ) -> JSON:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (the URL is checked to be http(s))
            f"{self.base_url}{path}", data=data, method=method
        )
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            what = f"Label Studio answered {exc.code} to {method} {path}"
            if exc.code in (401, 403):
                raise PermanentError(f"{what}: check FOREBAY_LABELSTUDIO_TOKEN") from None
            raise TransientError(what) from None
        except (OSError, TimeoutError) as exc:
            raise TransientError(f"Label Studio at {self.base_url} is unreachable: {exc}") from exc
        parsed: JSON = json.loads(raw) if raw else None
        return parsed


@dataclass(slots=True)
class ReconcileResult:
    """What one reconciliation pass did."""

    projects: int = 0
    tasks: int = 0
    enqueued: int = 0
    already_known: int = 0
    webhooks_enabled: list[int] = field(default_factory=list)
    watermarks: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JSON]:
        return {
            "projects": self.projects,
            "tasks": self.tasks,
            "enqueued": self.enqueued,
            "already_known": self.already_known,
            "webhooks_enabled": list(self.webhooks_enabled),
            "watermarks": dict(self.watermarks),
        }


class Reconciler:
    """One reconciliation pass per :meth:`run_once`. See the module docstring."""

    def __init__(
        self,
        app: Forebay,
        settings: LabelStudioSettings,
        *,
        client: LabelStudioClient | None = None,
        state_path: str | os.PathLike[str] | None = None,
        page_size: int = 100,
        overlap: timedelta = timedelta(seconds=1),
    ) -> None:
        if client is None:
            if not settings.labelstudio_url or not settings.labelstudio_token:
                raise ConfigError(
                    "reconciliation reads Label Studio's API: set FOREBAY_LABELSTUDIO_URL and "
                    "FOREBAY_LABELSTUDIO_TOKEN (an access token from Label Studio's account page)"
                )
            client = LabelStudioClient(settings.labelstudio_url, settings.labelstudio_token)
        self.app = app
        self.settings = settings
        self.client = client
        self.state_path = Path(state_path) if state_path else default_state_path(settings)
        self.page_size = page_size
        self.overlap = overlap

    async def run_once(self) -> ReconcileResult:
        result = ReconcileResult()
        marks = self._load()
        for project in await self._projects():
            pid = project.get("id")
            if not isinstance(pid, int):
                continue
            result.projects += 1
            await self._project(project, pid, marks, result)
        result.watermarks = dict(marks)
        result.webhooks_enabled = await asyncio.to_thread(self._enable_webhooks)
        return result

    async def _projects(self) -> list[dict[str, JSON]]:
        if self.settings.projects:
            found: list[dict[str, JSON]] = []
            for pid in self.settings.projects:
                project = await asyncio.to_thread(self.client.get, f"/api/projects/{pid}")
                found.append(project if isinstance(project, dict) else {"id": pid})
            return found
        projects: list[dict[str, JSON]] = []
        page = 1
        while True:
            answer = await asyncio.to_thread(
                self.client.get, "/api/projects", page=page, page_size=100
            )
            items = answer.get("results") if isinstance(answer, dict) else answer
            batch = [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []
            projects.extend(batch)
            if not (isinstance(answer, dict) and answer.get("next")) or not batch:
                return projects
            page += 1

    async def _project(
        self,
        project: dict[str, JSON],
        pid: int,
        marks: dict[str, str],
        result: ReconcileResult,
    ) -> None:
        since = marks.get(str(pid))
        page = 1
        while True:
            tasks = await asyncio.to_thread(self._tasks, pid, since, page)
            if not tasks:
                return
            jobs: list[NewJob] = []
            newest = marks.get(str(pid))
            for task in tasks:
                result.tasks += 1
                jobs.extend(self._jobs(project, task))
                stamp = normalise_time(task.get("updated_at"))
                if stamp is not None and (newest is None or stamp > newest):
                    newest = stamp
            stored = await self.app.enqueue_many(jobs)
            result.enqueued += sum(1 for j in stored if j.created)
            result.already_known += sum(1 for j in stored if not j.created)
            if newest is not None:
                marks[str(pid)] = newest
                self._save(marks)  # only after the page's jobs are stored
            if len(tasks) < self.page_size:
                return
            page += 1

    def _tasks(self, pid: int, since: str | None, page: int) -> list[dict[str, JSON]]:
        query: dict[str, JSON] = {"ordering": ["tasks:updated_at"]}
        if since is not None:
            start = datetime.strptime(since, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            value = (start - self.overlap).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            query["filters"] = {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:updated_at",
                        "operator": "greater",
                        "type": "Datetime",
                        "value": value,
                    }
                ],
            }
        answer = self.client.get(
            "/api/tasks",
            project=pid,
            fields="all",
            page=page,
            page_size=self.page_size,
            query=json.dumps(query, separators=(",", ":")),
        )
        items = answer.get("tasks") if isinstance(answer, dict) else answer
        return [t for t in items if isinstance(t, dict)] if isinstance(items, list) else []

    def _jobs(self, project: dict[str, JSON], task: dict[str, JSON]) -> list[NewJob]:
        changes = [task_change(ACTION, project, task)]
        annotations = task.get("annotations")
        for annotation in annotations if isinstance(annotations, list) else []:
            if isinstance(annotation, dict):
                changes.append(annotation_change(ACTION, project, task, annotation))
        return [
            NewJob.create(self.settings.queue, change, key=change_key(change)) for change in changes
        ]

    def _enable_webhooks(self) -> list[int]:
        hooks = self.client.get("/api/webhooks/")
        enabled = []
        for hook in hooks if isinstance(hooks, list) else []:
            if not isinstance(hook, dict) or hook.get("is_active") is not False:
                continue
            if not self._ours(hook):
                continue
            hook_id = hook.get("id")
            if isinstance(hook_id, int):
                self.client.patch(f"/api/webhooks/{hook_id}/", {"is_active": True})
                log.warning("Label Studio had switched webhook %s off; turned it back on", hook_id)
                enabled.append(hook_id)
        return enabled

    def _ours(self, hook: Mapping[str, JSON]) -> bool:
        url = hook.get("url")
        if self.settings.webhook_url:
            return isinstance(url, str) and url.startswith(self.settings.webhook_url)
        headers = hook.get("headers")
        names = {k.lower() for k in headers} if isinstance(headers, dict) else set()
        return self.settings.header.lower() in names

    def _load(self) -> dict[str, str]:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("reading %s failed (%s): reconciling from the start", self.state_path, exc)
            return {}
        marks = raw.get("watermarks", {}) if isinstance(raw, dict) else {}
        return {str(k): v for k, v in marks.items() if isinstance(v, str)}

    def _save(self, marks: Mapping[str, str]) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"watermarks": dict(marks)}, indent=1), encoding="utf-8")
        os.replace(temporary, self.state_path)


def default_state_path(settings: LabelStudioSettings) -> Path:
    """Where watermarks are kept: beside the dataset when it is a local folder."""
    if "://" in settings.dataset and not settings.dataset.startswith("file://"):
        return Path(".forebay-labelstudio-reconcile.json")
    return Path(settings.dataset.removeprefix("file://")) / ".forebay" / "reconcile.json"


def reconcile_schedule(every_s: float) -> Schedule:
    """The schedule of periodic reconciliation: a pass on ``labelstudio.reconcile`` every
    ``every_s`` seconds."""
    if every_s <= 0:
        raise ConfigError("the reconciliation period must be positive")
    return Schedule.create(RECONCILE_QUEUE, every=timedelta(seconds=every_s), name=RECONCILE_QUEUE)


async def schedule_reconcile(app: Forebay, every_s: float) -> Schedule:
    """Store the periodic reconciliation schedule (a new period replaces the stored one);
    the workers of a service that runs the pipeline fire it. Return it as stored."""
    schedule = reconcile_schedule(every_s)
    await (await app.open()).save_schedules([schedule])
    [stored] = [s for s in await app.list_schedules() if s.name == schedule.name]
    return stored


def install_reconcile(app: Forebay, settings: LabelStudioSettings) -> None:
    """The ``labelstudio.reconcile`` queue (one pass per job), and its schedule when
    ``settings.reconcile_every_s`` is set."""

    @app.handler(RECONCILE_QUEUE, concurrency=1, max_attempts=3, timeout_s=3600.0)
    async def reconcile(job: Job) -> None:
        result = await Reconciler(app, settings).run_once()
        log.info("reconciled Label Studio: %s", result.to_dict())

    if settings.reconcile_every_s is not None:
        declared = reconcile_schedule(settings.reconcile_every_s)
        app.schedule(
            declared.queue, every=declared.every, name=declared.name, catch_up=declared.catch_up
        )
