"""``forebay labelstudio demo`` and ``forebay labelstudio reconcile``.

``demo`` posts the sample webhook bodies shipped with forebay to a running service
(``forebay serve forebay.contrib.labelstudio:app``), exactly as Label Studio would, and follows
the jobs they became until they are done. ``reconcile`` recovers events Label Studio never
retried, once, or every N seconds (``--every``).
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from forebay.cli.options import JsonOption, UrlOption
from forebay.cli.output import EXIT_USAGE, fail, print_json, stdout
from forebay.cli.session import run
from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.job import JSON

__all__ = ["app"]

app = typer.Typer(
    name="labelstudio",
    help="The Label Studio pipeline: post the sample events, reconcile missed ones.",
    no_args_is_help=True,
)

ServiceOption = Annotated[
    str,
    typer.Option(
        "--service",
        metavar="URL",
        help="The running forebay service (env FOREBAY_SERVICE_URL).",
        envvar="FOREBAY_SERVICE_URL",
    ),
]
SecretOption = Annotated[
    str | None,
    typer.Option(
        "--secret",
        help="The webhook's shared secret [default: env FOREBAY_LABELSTUDIO_SECRET].",
        show_default=False,
    ),
]


@app.command("demo")
def demo(
    service: ServiceOption = "http://127.0.0.1:8000",
    secret: SecretOption = None,
    header: Annotated[str, typer.Option(help="The secret's header.")] = "X-Forebay-Secret",
    deletes: Annotated[
        bool, typer.Option(help="Also post the delete events (the rows then end deleted).")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(help="API token to read job states [default: env FOREBAY_API_TOKEN]."),
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for the jobs.")] = 60.0,
) -> None:
    """Post the sample Label Studio events to a running service and follow their jobs."""
    secret = secret or os.environ.get("FOREBAY_LABELSTUDIO_SECRET")
    if not secret:
        fail("give --secret or set FOREBAY_LABELSTUDIO_SECRET (the service's value)", EXIT_USAGE)
    token = token or os.environ.get("FOREBAY_API_TOKEN")
    base = service.rstrip("/")
    out = stdout()
    job_ids: list[int] = []
    for name in samples.ORDER:
        if not deletes and "deleted" in name:
            continue
        body = _with_page_geometry(samples.load(name))
        answer = _request(f"{base}/v1/sources/labelstudio", body, {header: secret})
        jobs = answer.get("jobs") if isinstance(answer, dict) else None
        ids = [
            job_id
            for j in (jobs if isinstance(jobs, list) else [])
            if isinstance(j, dict) and isinstance(job_id := j.get("id"), int)
        ]
        job_ids.extend(ids)
        action = body.get("action") if isinstance(body, dict) else None
        out.print(f"posted {action:<22} → job(s) {', '.join(map(str, ids)) or '-'}  ({name})")
    states = _follow(base, job_ids, token, timeout_s)
    summary: dict[str, int] = {}
    for state in states.values():
        summary[state] = summary.get(state, 0) + 1
    out.print("job states: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.items())))
    out.print(
        "rows: the dataset folder of the service (FOREBAY_DATASET, default ./forebay-dataset), "
        "and the stage.* tables when FOREBAY_STAGE_URL is set"
    )
    if any(s not in ("completed",) for s in states.values()):
        raise typer.Exit(1)


@app.command("reconcile")
def reconcile(
    every: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Instead of one pass now: enqueue a job that reconciles every SECONDS "
            "(run by the service's workers).",
        ),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read tasks changed since the last pass from Label Studio and enqueue them (same keys)."""
    from forebay.contrib.labelstudio.pipeline import build_app
    from forebay.contrib.labelstudio.reconcile import Reconciler, schedule_reconcile

    settings = LabelStudioSettings.from_env()
    forebay_app = build_app(settings, url=url)

    async def main() -> dict[str, JSON]:
        async with forebay_app:
            if every is not None:
                job = await schedule_reconcile(forebay_app, every)
                return {"scheduled": job.id, "every_s": every, "created": job.created}
            return (await Reconciler(forebay_app, settings).run_once()).to_dict()

    result = run(main())
    if as_json:
        print_json(result)
    else:
        for key, value in result.items():
            stdout().print(f"{key}: {value}")


def _with_page_geometry(body: JSON) -> JSON:
    """The sample with each task's page geometry in its data, as a project would import it."""
    body = copy.deepcopy(body)
    geometry = samples.page_geometry()
    tasks: list[Any] = []
    if isinstance(body, dict):
        for key in ("task", "tasks"):
            value = body.get(key)
            tasks.extend(value if isinstance(value, list) else [value])
    for task in tasks:
        data = task.get("data") if isinstance(task, dict) else None
        if isinstance(data, dict) and data.get("doc_id") in geometry:
            data["page_geometry"] = geometry[str(data["doc_id"])]
    return body


def _request(url: str, body: JSON | None = None, headers: dict[str, str] | None = None) -> JSON:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)  # noqa: S310 (a URL the user gave)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            parsed: JSON = json.loads(response.read() or b"null")
            return parsed
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        fail(f"{url} answered {exc.code}: {detail}")
    except OSError as exc:
        fail(
            f"no forebay service at {url}: {exc} (start one: forebay serve "
            "forebay.contrib.labelstudio:app)"
        )


def _follow(base: str, job_ids: list[int], token: str | None, timeout_s: float) -> dict[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    states: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for job_id in job_ids:
            if states.get(job_id) in ("completed", "dead", "cancelled"):
                continue
            job = _request(f"{base}/v1/jobs/{job_id}", headers=headers)
            state = job.get("state") if isinstance(job, dict) else None
            if isinstance(state, str) and state != states.get(job_id):
                stdout().print(f"job {job_id}: {state}")
                states[job_id] = state
        if all(states.get(j) in ("completed", "dead", "cancelled") for j in job_ids):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(0.2)
