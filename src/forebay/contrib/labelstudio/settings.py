"""The Label Studio pipeline's settings: one object, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from forebay.errors import ConfigError

__all__ = ["LabelStudioSettings"]


@dataclass(frozen=True, slots=True)
class LabelStudioSettings:
    """Where the pipeline takes events from and writes them to.

    ===============================  =====================================  =====================
    field                            environment variable                   default
    ===============================  =====================================  =====================
    ``secret``                       ``FOREBAY_LABELSTUDIO_SECRET``          (required to serve)
    ``header``                       ``FOREBAY_LABELSTUDIO_HEADER``          ``X-Forebay-Secret``
    ``dataset``                      ``FOREBAY_DATASET``                     ``./forebay-dataset``
    ``stage_url``                    ``FOREBAY_STAGE_URL``                   none (no staging)
    ``stage_schema``                 ``FOREBAY_STAGE_SCHEMA``                ``stage``
    ``pdf_folder``                   ``FOREBAY_LABELSTUDIO_PDFS``            none
    ``flush_interval_s``             ``FOREBAY_DATASET_FLUSH_S``             ``1``
    ``hub_repo``                     ``FOREBAY_HF_REPO``                     none (no Hub)
    ``hub_commit_interval_s``        ``FOREBAY_HF_COMMIT_INTERVAL_S``        ``120``
    ``labelstudio_url``              ``FOREBAY_LABELSTUDIO_URL``             none
    ``labelstudio_token``            ``FOREBAY_LABELSTUDIO_TOKEN``           none
    ``projects``                     ``FOREBAY_LABELSTUDIO_PROJECTS``        all (comma-separated)
    ``webhook_url``                  ``FOREBAY_LABELSTUDIO_WEBHOOK_URL``     none
    ``batch_size``                   ``FOREBAY_LABELSTUDIO_BATCH_SIZE``      ``100``
    ``concurrency``                  ``FOREBAY_LABELSTUDIO_CONCURRENCY``     ``16``
    ===============================  =====================================  =====================

    ``secret`` authenticates the webhooks: the app that serves them refuses to start without
    it (:meth:`webhook_secret`); reconciliation, which only reads Label Studio's API and
    stores jobs, does not need it.
    ``labelstudio_url``/``token`` are for reconciliation (reading tasks from Label Studio's API);
    ``webhook_url`` is the address Label Studio posts to, used to find our webhook there.
    ``batch_size`` changes go to one handler call (one dataset write, one PostgreSQL
    transaction); up to ``concurrency`` calls run at once, and their dataset writes share a
    flush, so a deep backlog is written ``batch_size * concurrency`` changes at a time.
    """

    secret: str = ""
    header: str = "X-Forebay-Secret"
    queue: str = "labelstudio"
    source: str = "labelstudio"
    dataset: str = "./forebay-dataset"
    stage_url: str | None = None
    stage_schema: str = "stage"
    pdf_folder: str | None = None
    flush_interval_s: float = 1.0
    hub_repo: str | None = None
    hub_commit_interval_s: float = 120.0
    labelstudio_url: str | None = None
    labelstudio_token: str | None = None
    projects: tuple[int, ...] = ()
    webhook_url: str | None = None
    batch_size: int = 100
    concurrency: int = 16
    max_body_bytes: int = 64 * 1024 * 1024
    """Label Studio splits bulk events at 5,000 objects; a full body can reach tens of MB."""

    def webhook_secret(self) -> str:
        """The shared secret, or ConfigError saying how to set it."""
        if not self.secret:
            raise ConfigError(
                "the Label Studio source needs a shared secret: set FOREBAY_LABELSTUDIO_SECRET "
                "and configure the same value as a header on the Label Studio webhook"
            )
        return self.secret

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> LabelStudioSettings:
        """Read ``FOREBAY_*`` variables (see the table); keyword arguments win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"secret": env.get("FOREBAY_LABELSTUDIO_SECRET", "")}
        text = {
            "header": "FOREBAY_LABELSTUDIO_HEADER",
            "dataset": "FOREBAY_DATASET",
            "stage_url": "FOREBAY_STAGE_URL",
            "stage_schema": "FOREBAY_STAGE_SCHEMA",
            "pdf_folder": "FOREBAY_LABELSTUDIO_PDFS",
            "hub_repo": "FOREBAY_HF_REPO",
            "labelstudio_url": "FOREBAY_LABELSTUDIO_URL",
            "labelstudio_token": "FOREBAY_LABELSTUDIO_TOKEN",
            "webhook_url": "FOREBAY_LABELSTUDIO_WEBHOOK_URL",
        }
        for name, variable in text.items():
            if env.get(variable):
                values[name] = env[variable]
        numbers = {
            "flush_interval_s": "FOREBAY_DATASET_FLUSH_S",
            "hub_commit_interval_s": "FOREBAY_HF_COMMIT_INTERVAL_S",
        }
        for name, variable in numbers.items():
            if env.get(variable):
                try:
                    values[name] = float(env[variable])
                except ValueError:
                    raise ConfigError(f"{variable} must be a number of seconds") from None
        counts = {
            "batch_size": "FOREBAY_LABELSTUDIO_BATCH_SIZE",
            "concurrency": "FOREBAY_LABELSTUDIO_CONCURRENCY",
        }
        for name, variable in counts.items():
            if env.get(variable):
                try:
                    values[name] = int(env[variable])
                except ValueError:
                    raise ConfigError(f"{variable} must be a whole number") from None
                if int(env[variable]) < 1:
                    raise ConfigError(f"{variable} must be at least 1")
        if env.get("FOREBAY_LABELSTUDIO_PROJECTS"):
            try:
                values["projects"] = tuple(
                    int(p) for p in env["FOREBAY_LABELSTUDIO_PROJECTS"].split(",") if p.strip()
                )
            except ValueError:
                raise ConfigError(
                    "FOREBAY_LABELSTUDIO_PROJECTS must be project ids, comma-separated"
                ) from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
