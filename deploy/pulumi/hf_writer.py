"""The Label Studio writer as a Kubernetes workload, declared with Pulumi: a Deployment running
`forebay worker forebay.contrib.labelstudio:app` (it leases the `labelstudio` queue, writes the
dataset's parquet shards and commits them to a Hugging Face Hub dataset repository), a Secret
with the Hub token, the job store's URL and the webhook's shared secret (taken from Pulumi
config secrets, so they stay encrypted in the state), a ConfigMap with the rest, and a volume
for the dataset folder. The intake that receives Label Studio's webhooks is deployed apart
(deploy/kubernetes); see docs/operations.md and docs/labelstudio.md."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

APP = "forebay.contrib.labelstudio:app"
METRICS_PORT = 9100
GRACE_MARGIN_S = 15
"""How far the pod's termination grace exceeds the worker's shutdown grace: time to put the
unfinished jobs back, write the last outcomes, wait for the queue hooks still running and remove
the worker's record, before the kubelet's SIGKILL (which cuts off a hook still running then)."""


@dataclass(frozen=True)
class HfWriterConfig:
    """What a stack sets (`pulumi config set [--secret] KEY VALUE`)."""

    image: str
    hf_repo: str
    hf_token: pulumi.Input[str]
    database_url: pulumi.Input[str]
    webhook_secret: pulumi.Input[str]
    stage_url: pulumi.Input[str] | None = None
    replicas: int = 1
    namespace: str | None = None
    name: str = "hf-writer"
    dataset: str = "/data/dataset"
    dataset_storage: str = "10Gi"
    commit_interval_s: int = 120
    shutdown_grace_s: int = 30
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in (
            ("replicas", self.replicas),
            ("commitIntervalS", self.commit_interval_s),
            ("shutdownGraceS", self.shutdown_grace_s),
        ):
            if value < 0:
                raise pulumi.RunError(f"{key} is {value}: it cannot be negative")
        if self.uses_volume_claim and self.replicas > 1:
            # Two writers on one dataset folder would write the same shards and Hub state
            # (.forebay/hub.json) over each other; a ReadWriteOnce claim may even be mounted by
            # pods of one node at once.
            raise pulumi.RunError(
                f"replicas is {self.replicas}, but the dataset {self.dataset!r} is on a "
                "ReadWriteOnce volume claim, which takes one writer at a time: set replicas to "
                "1 (or 0), or put the dataset on an object store (dataset s3://bucket/prefix)"
            )

    @property
    def uses_volume_claim(self) -> bool:
        """The dataset is a folder on the pod's /data volume: a ReadWriteOnce claim of its own
        (a dataset on an object store, s3://..., needs none)."""
        return self.dataset.startswith("/data")

    @classmethod
    def from_pulumi(cls, config: pulumi.Config) -> HfWriterConfig:
        def integer(key: str, default: int) -> int:
            value = config.get_int(key)
            return default if value is None else value  # an explicit 0 stays 0

        return cls(
            image=config.require("image"),
            hf_repo=config.require("hfRepo"),
            hf_token=config.require_secret("hfToken"),
            database_url=config.require_secret("databaseUrl"),
            webhook_secret=config.require_secret("webhookSecret"),
            stage_url=config.get_secret("stageUrl"),
            replicas=integer("replicas", 1),
            namespace=config.get("namespace"),
            dataset=config.get("dataset") or "/data/dataset",
            dataset_storage=config.get("datasetStorage") or "10Gi",
            commit_interval_s=integer("commitIntervalS", 120),
            shutdown_grace_s=integer("shutdownGraceS", 30),
        )


@dataclass(frozen=True)
class HfWriter:
    secret: k8s.core.v1.Secret
    config_map: k8s.core.v1.ConfigMap
    deployment: k8s.apps.v1.Deployment
    volume_claim: k8s.core.v1.PersistentVolumeClaim | None


def _secret(cfg: HfWriterConfig, labels: dict[str, str]) -> k8s.core.v1.Secret:
    values: dict[str, pulumi.Input[str]] = {
        "HF_TOKEN": cfg.hf_token,
        "FOREBAY_URL": cfg.database_url,
        "FOREBAY_LABELSTUDIO_SECRET": cfg.webhook_secret,
    }
    if cfg.stage_url is not None:
        values["FOREBAY_STAGE_URL"] = cfg.stage_url
    return k8s.core.v1.Secret(
        cfg.name,
        metadata=k8s.meta.v1.ObjectMetaArgs(namespace=cfg.namespace, labels=labels),
        type="Opaque",
        # Secret whatever the config said: never written in clear to the state.
        string_data={key: pulumi.Output.secret(value) for key, value in values.items()},
        opts=pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"]),
    )


def _config_map(cfg: HfWriterConfig, labels: dict[str, str]) -> k8s.core.v1.ConfigMap:
    data = {
        "FOREBAY_DATASET": cfg.dataset,
        "FOREBAY_HF_REPO": cfg.hf_repo,
        "FOREBAY_HF_COMMIT_INTERVAL_S": str(cfg.commit_interval_s),
        "FOREBAY_SHUTDOWN_GRACE_S": str(cfg.shutdown_grace_s),
        "FOREBAY_LOG_FORMAT": "json",
        # The Hub client keeps its cache in the writable volume (the root filesystem is not).
        "HF_HOME": "/data/.hf",
        **cfg.extra_env,
    }
    return k8s.core.v1.ConfigMap(
        cfg.name,
        metadata=k8s.meta.v1.ObjectMetaArgs(namespace=cfg.namespace, labels=labels),
        data=data,
    )


def _probe(path: str, period_s: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="metrics"),
        period_seconds=period_s,
        timeout_seconds=3,
        failure_threshold=3,
    )


def _container(
    cfg: HfWriterConfig, secret: k8s.core.v1.Secret, config_map: k8s.core.v1.ConfigMap
) -> k8s.core.v1.ContainerArgs:
    secret_keys = ["HF_TOKEN", "FOREBAY_URL", "FOREBAY_LABELSTUDIO_SECRET"]
    if cfg.stage_url is not None:
        secret_keys.append("FOREBAY_STAGE_URL")
    env = [
        k8s.core.v1.EnvVarArgs(
            name=key,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key=key)
            ),
        )
        for key in secret_keys
    ]
    return k8s.core.v1.ContainerArgs(
        name="hf-writer",
        image=cfg.image,
        args=["worker", APP, "--metrics-port", str(METRICS_PORT)],
        env=env,
        env_from=[
            k8s.core.v1.EnvFromSourceArgs(
                config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=config_map.metadata.name)
            )
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name="metrics", container_port=METRICS_PORT)],
        liveness_probe=_probe("/healthz", 10),
        readiness_probe=_probe("/readyz", 10),
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests={"cpu": "500m", "memory": "512Mi"}, limits={"memory": "2Gi"}
        ),
        security_context=k8s.core.v1.SecurityContextArgs(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        ),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"),
            k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),  # noqa: S108
        ],
    )


def hf_writer(cfg: HfWriterConfig) -> HfWriter:
    """Declare the hf-writer's resources."""
    labels = {
        "app.kubernetes.io/name": "forebay",
        "app.kubernetes.io/component": cfg.name,
        "app.kubernetes.io/part-of": "forebay",
    }
    secret = _secret(cfg, labels)
    config_map = _config_map(cfg, labels)
    # The dataset folder keeps the shards and what was committed to the Hub (.forebay/hub.json)
    # across restarts; a dataset on an object store (s3://...) needs no volume of its own.
    claim = None
    data_volume = k8s.core.v1.VolumeArgs(
        name="data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()
    )
    if cfg.uses_volume_claim:
        claim = k8s.core.v1.PersistentVolumeClaim(
            cfg.name,
            metadata=k8s.meta.v1.ObjectMetaArgs(namespace=cfg.namespace, labels=labels),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": cfg.dataset_storage}
                ),
            ),
        )
        data_volume = k8s.core.v1.VolumeArgs(
            name="data",
            persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                claim_name=claim.metadata.name
            ),
        )
    deployment = k8s.apps.v1.Deployment(
        cfg.name,
        metadata=k8s.meta.v1.ObjectMetaArgs(namespace=cfg.namespace, labels=labels),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=cfg.replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            # One writer at a time on the volume (HfWriterConfig refuses replicas > 1 with a
            # claim): the old pod finishes before the new starts.
            strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    labels=labels,
                    annotations={
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                ),
                spec=k8s.core.v1.PodSpecArgs(
                    termination_grace_period_seconds=cfg.shutdown_grace_s + GRACE_MARGIN_S,
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        run_as_non_root=True, run_as_user=10001, run_as_group=10001, fs_group=10001
                    ),
                    containers=[_container(cfg, secret, config_map)],
                    volumes=[
                        data_volume,
                        k8s.core.v1.VolumeArgs(
                            name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()
                        ),
                    ],
                ),
            ),
        ),
    )
    return HfWriter(secret, config_map, deployment, claim)
