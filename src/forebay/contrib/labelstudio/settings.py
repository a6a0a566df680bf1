"""The Label Studio pipeline's settings: one object, read from the environment in one place
(:func:`forebay.settings.from_env`, by each field's type)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from forebay.errors import ConfigError
from forebay.settings import NOT_FROM_ENV, from_env, variable

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
    ``reconcile_every_s``            ``FOREBAY_LABELSTUDIO_RECONCILE_EVERY_S`` none (no schedule)
    ===============================  =====================================  =====================

    ``secret`` authenticates the webhooks: the app that serves them refuses to start without
    it (:meth:`webhook_secret`); reconciliation, which only reads Label Studio's API and
    stores jobs, does not need it.
    ``labelstudio_url``/``token`` are for reconciliation (reading tasks from Label Studio's API);
    ``webhook_url`` is the address Label Studio posts to, used to find our webhook there.
    ``reconcile_every_s``: the app also declares a schedule that reconciles every so many
    seconds (fired by its workers, each tick once).
    ``batch_size`` changes go to one handler call (one dataset write, one PostgreSQL
    transaction); up to ``concurrency`` calls run at once, and their dataset writes share a
    flush, so a deep backlog is written ``batch_size * concurrency`` changes at a time.
    """

    secret: str = field(default="", metadata=variable("FOREBAY_LABELSTUDIO_SECRET"))
    header: str = field(default="X-Forebay-Secret", metadata=variable("FOREBAY_LABELSTUDIO_HEADER"))
    queue: str = field(default="labelstudio", metadata=NOT_FROM_ENV)
    source: str = field(default="labelstudio", metadata=NOT_FROM_ENV)
    dataset: str = field(default="./forebay-dataset", metadata=variable("FOREBAY_DATASET"))
    stage_url: str | None = field(default=None, metadata=variable("FOREBAY_STAGE_URL"))
    stage_schema: str = field(default="stage", metadata=variable("FOREBAY_STAGE_SCHEMA"))
    pdf_folder: str | None = field(default=None, metadata=variable("FOREBAY_LABELSTUDIO_PDFS"))
    flush_interval_s: float = field(default=1.0, metadata=variable("FOREBAY_DATASET_FLUSH_S"))
    hub_repo: str | None = field(default=None, metadata=variable("FOREBAY_HF_REPO"))
    hub_commit_interval_s: float = field(
        default=120.0, metadata=variable("FOREBAY_HF_COMMIT_INTERVAL_S")
    )
    labelstudio_url: str | None = field(default=None, metadata=variable("FOREBAY_LABELSTUDIO_URL"))
    labelstudio_token: str | None = field(
        default=None, metadata=variable("FOREBAY_LABELSTUDIO_TOKEN")
    )
    projects: tuple[int, ...] = field(default=(), metadata=variable("FOREBAY_LABELSTUDIO_PROJECTS"))
    webhook_url: str | None = field(
        default=None, metadata=variable("FOREBAY_LABELSTUDIO_WEBHOOK_URL")
    )
    batch_size: int = field(
        default=100, metadata=variable("FOREBAY_LABELSTUDIO_BATCH_SIZE", at_least=1)
    )
    concurrency: int = field(
        default=16, metadata=variable("FOREBAY_LABELSTUDIO_CONCURRENCY", at_least=1)
    )
    reconcile_every_s: float | None = field(
        default=None, metadata=variable("FOREBAY_LABELSTUDIO_RECONCILE_EVERY_S", at_least=1)
    )
    max_body_bytes: int = field(default=64 * 1024 * 1024, metadata=NOT_FROM_ENV)
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
        cls, environ: Mapping[str, str] | None = None, **given: object
    ) -> LabelStudioSettings:
        """Read ``FOREBAY_*`` variables (see the table); keyword arguments win over them."""
        return from_env(cls, environ, given=given)
