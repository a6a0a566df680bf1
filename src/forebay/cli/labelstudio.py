"""``forebay labelstudio demo`` and ``forebay labelstudio reconcile``.

``demo`` posts the sample webhook bodies shipped with forebay to a running service
(``forebay serve forebay.contrib.labelstudio:app``), exactly as Label Studio would, follows
the jobs they became until they are done (saying which were stored by an earlier run and not
run again), and counts the rows they left. ``reconcile`` recovers events Label Studio never
retried, once, or every N seconds (``--every``: a stored schedule); it needs Label Studio's
API, not the webhook's secret.

The pipeline itself is :mod:`forebay.contrib.labelstudio`; its commands live here, with the
others, because the CLI is what puts it together with a backend and a running service.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from forebay.app import Forebay
from forebay.cli.options import JsonOption, UrlOption
from forebay.cli.output import EXIT_USAGE, fail, print_json, stdout
from forebay.cli.session import run
from forebay.contrib.labelstudio import samples
from forebay.contrib.labelstudio.settings import LabelStudioSettings
from forebay.contrib.labelstudio.stage import MIGRATIONS
from forebay.job import JSON, utcnow
from forebay.sqlfiles import load_queries

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
    """Post the sample Label Studio events to a running service and follow their jobs.

    Then count the rows of the dataset folder (FOREBAY_DATASET) and, with FOREBAY_STAGE_URL,
    of the staging tables: the service's, when it runs with the same variables.
    """
    secret = secret or os.environ.get("FOREBAY_LABELSTUDIO_SECRET")
    if not secret:
        fail("give --secret or set FOREBAY_LABELSTUDIO_SECRET (the service's value)", EXIT_USAGE)
    token = token or os.environ.get("FOREBAY_API_TOKEN")
    base = service.rstrip("/")
    job_ids: list[int] = []
    stored_before = 0
    for name in samples.ORDER:
        if not deletes and "deleted" in name:
            continue
        ids, created = _post_sample(base, name, {header: secret})
        job_ids.extend(ids)
        stored_before += len(ids) - created
    states = _follow(base, job_ids, token, timeout_s)
    _print_summary(states, stored_before)
    _print_row_counts(LabelStudioSettings.from_env())
    if any(s not in ("completed",) for s in states.values()):
        raise typer.Exit(1)


def _post_sample(base: str, name: str, headers: dict[str, str]) -> tuple[list[int], int]:
    """Post one sample body; print what it became. Returns its job ids and how many of them
    are new (a job already stored, with the same key, is not run again)."""
    body = _with_page_geometry(samples.load(name))
    answer = _request(f"{base}/v1/sources/labelstudio", body, headers)
    jobs = answer.get("jobs") if isinstance(answer, dict) else None
    accepted = [j for j in (jobs if isinstance(jobs, list) else []) if isinstance(j, dict)]
    ids = [i for j in accepted if isinstance(i := j.get("id"), int)]
    created = sum(1 for j in accepted if j.get("created") is True)
    action = body.get("action") if isinstance(body, dict) else None
    line = f"posted {action:<22} → job(s) {', '.join(map(str, ids)) or '-'}"
    if ids and not created:
        line += " — already stored, not run again"
    stdout().print(f"{line}  ({name})", highlight=False)
    return ids, created


def _print_summary(states: dict[int, str], stored_before: int) -> None:
    summary: dict[str, int] = {}
    for state in states.values():
        summary[state] = summary.get(state, 0) + 1
    out = stdout()
    out.print("job states: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.items())))
    if stored_before:
        out.print(
            f"{stored_before} of these jobs were already in the job store: an earlier run "
            "stored the same events, and wrote their rows where it was told to (its dataset "
            "folder, and its staging tables if FOREBAY_STAGE_URL was set then). Start the "
            "service on a fresh job store (FOREBAY_URL) to run them again.",
            highlight=False,
        )


def _print_row_counts(settings: LabelStudioSettings) -> None:
    out = stdout()
    out.print(f"rows in the dataset {settings.dataset}: {_dataset_counts(settings.dataset)}")
    if settings.stage_url:
        where = f"rows in the staging tables (schema {settings.stage_schema})"
        out.print(f"{where}: {_stage_counts(settings.stage_url, settings.stage_schema)}")
    else:
        out.print("no staging tables: FOREBAY_STAGE_URL is not set", highlight=False)


def _dataset_counts(root: str) -> str:
    folder = Path(root.removeprefix("file://"))
    if "://" in root and not root.startswith("file://"):
        return "not counted (not a local folder)"
    if not (folder / "data").is_dir():
        return "none yet (the service writes them; is FOREBAY_DATASET the service's?)"
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        return "not counted (pip install 'forebay[parquet]')"
    counts = []
    for table in sorted(p.name for p in (folder / "data").iterdir() if p.is_dir()):
        shards = sorted((folder / "data" / table).glob("*.parquet"))
        counts.append(f"{table} {sum(pq.read_metadata(s).num_rows for s in shards)}")
    return ", ".join(counts) or "none yet"


def _stage_counts(dsn: str, schema: str) -> str:
    """Read only: a service that has not started yet gets to create the schema itself."""
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        return "not counted (pip install 'forebay[postgres]')"

    async def fetch() -> list[Any]:
        conn = await asyncpg.connect(dsn, timeout=5, server_settings={"search_path": schema})
        try:
            return list(await conn.fetch(load_queries(MIGRATIONS)["row_counts"]))
        finally:
            await conn.close()

    try:
        rows = asyncio.run(fetch())
    except asyncpg.UndefinedTableError:
        return "none: the tables do not exist (the service creates them when it starts)"
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"not counted ({type(exc).__name__}: {exc})"
    return ", ".join(
        f"{r['name']} {r['n']}" + (f" ({r['deleted']} deleted)" if r["deleted"] else "")
        for r in rows
    )


@app.command("reconcile")
def reconcile(
    every: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Instead of one pass now: store a schedule that reconciles every SECONDS "
            "(fired and run by the service's workers; see forebay schedules).",
        ),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read tasks changed since the last pass from Label Studio and enqueue them (same keys)."""
    from forebay.contrib.labelstudio.reconcile import Reconciler, schedule_reconcile

    # Only the job store: the pass stores jobs for the service's workers; the webhook's
    # secret and the sinks are the service's.
    settings = LabelStudioSettings.from_env()
    forebay_app = Forebay(url)

    async def main() -> dict[str, JSON]:
        async with forebay_app:
            if every is not None:
                stored = await schedule_reconcile(forebay_app, every)
                view = stored.to_dict(utcnow())
                return {"schedule": stored.name, "every_s": every, "next_tick": view["next_tick"]}
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
