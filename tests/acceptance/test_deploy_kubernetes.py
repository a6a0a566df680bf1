"""The Kubernetes recipe (deploy/kubernetes) renders and is valid: every core object against the
Kubernetes OpenAPI schemas (``kubernetes-validate`` ships them: no cluster), the KEDA
ScaledObject against a schema of KEDA's documented spec, and the properties an operator relies
on: probes on /healthz and /readyz, a worker grace above its shutdown grace, disruption
budgets that never block a drain, Prometheus scraping, and autoscaling on the due jobs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.32.0"
"""A Kubernetes release that kubernetes-validate ships schemas for (still served by clusters)."""

Obj = dict[str, Any]


def _load_kustomization(folder: Path) -> list[Obj]:
    """What ``kubectl kustomize`` renders, for the subset these kustomizations use (resources,
    common labels, image tags), when kubectl is not installed."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            objects.extend(_load_kustomization(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for labels in spec.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(labels["pairs"])
    for image in spec.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                if container["image"] == image["name"]:
                    container["image"] = f"{image['name']}:{image['newTag']}"
    return objects


def _containers(obj: Obj) -> Iterator[Obj]:
    if obj["kind"] == "Deployment":
        yield from obj["spec"]["template"]["spec"]["containers"]


def render(name: str) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return _load_kustomization(KUBE / name)
    out = subprocess.run(
        [kubectl, "kustomize", str(KUBE / name)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], Obj]:
    return by_kind(render("base"))


@pytest.fixture(scope="module")
def keda() -> dict[tuple[str, str], Obj]:
    return by_kind(render("keda"))


def test_kubectl_renders_both_kustomizations_when_installed() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the kustomizations were read in Python")
    assert {k for k, _ in by_kind(render("base"))} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    assert ("ScaledObject", "forebay-worker") in by_kind(render("keda"))


@pytest.mark.parametrize("name", ["base", "keda"])
def test_every_core_object_is_valid_for_kubernetes(name: str) -> None:
    objects = render(name)
    core = [o for o in objects if o["apiVersion"] != "keda.sh/v1alpha1"]
    # Everything but the KEDA object is validated here: nothing of another API slips through.
    assert sorted(o["kind"] for o in core) == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Service",
    ]
    for obj in core:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the message
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_a_misspelt_field_is_caught_by_the_validation() -> None:
    """The validation is strict: it would catch a typo in the recipe."""
    deployment = next(o for o in render("base") if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _env(container: Obj, config: Obj) -> dict[str, str]:
    """The container's environment: its ConfigMap's keys, then its own ``env``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == config["metadata"]["name"]
            env.update(config["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_the_worker_grace_outlasts_its_shutdown_grace(base: dict[tuple[str, str], Obj]) -> None:
    worker = base["Deployment", "forebay-worker"]
    pod = worker["spec"]["template"]["spec"]
    env = _env(pod["containers"][0], base["ConfigMap", "forebay"])
    shutdown_grace_s = float(env.get("FOREBAY_SHUTDOWN_GRACE_S", "30"))
    assert "FOREBAY_SHUTDOWN_GRACE_S" in env  # set in the manifest, not left to the default
    assert pod["terminationGracePeriodSeconds"] > shutdown_grace_s + 10


@pytest.mark.parametrize(
    ("name", "args", "port"),
    [
        ("forebay-intake", ["serve", "$(FOREBAY_APP)", "--no-workers"], 8000),
        ("forebay-worker", ["worker", "$(FOREBAY_APP)", "--metrics-port", "9100"], 9100),
    ],
)
def test_both_deployments_probe_healthz_and_readyz_and_are_scraped(
    base: dict[tuple[str, str], Obj], name: str, args: list[str], port: int
) -> None:
    deployment = base["Deployment", name]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["args"] == args
    assert container["image"] == "forebay:latest"
    env = _env(container, base["ConfigMap", "forebay"])
    assert env["FOREBAY_APP"]  # $(FOREBAY_APP) in args is expanded from the ConfigMap
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == port
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # The store's URL and the tokens come from the Secret the operator creates.
    assert {"secretRef": {"name": "forebay"}} in container["envFrom"]
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_service_routes_to_the_intake(base: dict[tuple[str, str], Obj]) -> None:
    service = base["Service", "forebay-intake"]
    intake = base["Deployment", "forebay-intake"]
    assert service["spec"]["selector"] == intake["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def allowed_disruptions(budget: Obj, healthy: int) -> int:
    """How many of ``healthy`` pods the budget lets an eviction take down at once (its
    integer forms, as the disruption controller computes them)."""
    spec = budget["spec"]
    if "maxUnavailable" in spec:
        return max(0, min(healthy, spec["maxUnavailable"]))
    return max(0, healthy - spec["minAvailable"])


@pytest.mark.parametrize("name", ["forebay-intake", "forebay-worker"])
def test_a_disruption_budget_evicts_one_pod_at_a_time_and_never_blocks_a_drain(
    base: dict[tuple[str, str], Obj], name: str
) -> None:
    budget = base["PodDisruptionBudget", name]
    deployment = base["Deployment", name]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    replicas = deployment["spec"]["replicas"]
    # One pod at a time: at the manifest's replicas, the others keep serving...
    assert allowed_disruptions(budget, replicas) == 1 < replicas
    # ...and at any count down to one pod (KEDA's floor, an overlay's single replica), a
    # drain can still evict: `kubectl drain` never waits forever.
    assert all(allowed_disruptions(budget, n) == 1 for n in range(1, 11))


def test_a_min_available_budget_would_block_a_drain_at_one_replica() -> None:
    """Why maxUnavailable: minAvailable 1 lets no eviction through at a single replica."""
    assert allowed_disruptions({"spec": {"minAvailable": 1}}, 1) == 0


# KEDA's ScaledObject (keda.sh/v1alpha1), as documented in "Scaling Deployments, StatefulSets &
# Custom Resources" and the Prometheus scaler's page: the fields this recipe may use, closed so a
# misspelt one fails.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer"},
                        "replicas": {"type": "integer"},
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # Every metadata value is a string, numbers included.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}

PROMETHEUS_TRIGGER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["serverAddress", "query", "threshold"],
    "additionalProperties": False,
    "properties": {
        "serverAddress": {"type": "string", "pattern": "^https?://"},
        "query": {"type": "string"},
        "threshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "activationThreshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "namespace": {"type": "string"},
        "customHeaders": {"type": "string"},
        "ignoreNullValues": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
        "queryParameters": {"type": "string"},
    },
}


def test_keda_scales_the_workers_on_the_due_jobs(keda: dict[tuple[str, str], Obj]) -> None:
    scaled = keda["ScaledObject", "forebay-worker"]
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    target = keda["Deployment", spec["scaleTargetRef"]["name"]]
    assert target["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    # At KEDA's floor the disruption budget still lets a drain evict the last worker.
    budget = keda["PodDisruptionBudget", "forebay-worker"]
    assert allowed_disruptions(budget, spec["minReplicaCount"]) >= 1
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    jsonschema.validate(trigger["metadata"], PROMETHEUS_TRIGGER_SCHEMA)
    query = " ".join(trigger["metadata"]["query"].split())
    # Due jobs: queued minus those not due yet (scheduled: a future run_at, a retry's backoff),
    # per queue, then added up. Every process exports the store's counts: the max per queue,
    # never their sum. The same expression as deploy/prometheus/alerts.yml's due jobs.
    due = (
        'max by (queue) (forebay_queue_jobs{state="queued"}) '
        '- max by (queue) (forebay_queue_jobs{state="scheduled"})'
    )
    assert query == f"sum( {due} )"
    alerts = " ".join((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text().split())
    assert due in alerts


def test_docs_operations_shows_the_scaled_objects_query_and_budgets(
    keda: dict[tuple[str, str], Obj],
) -> None:
    docs = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    query = " ".join(
        keda["ScaledObject", "forebay-worker"]["spec"]["triggers"][0]["metadata"]["query"].split()
    )
    assert query in docs
    assert "`maxUnavailable: 1`" in docs


def test_the_scaled_object_schema_refuses_a_misspelt_field(
    keda: dict[tuple[str, str], Obj],
) -> None:
    broken = yaml.safe_load(yaml.safe_dump(keda["ScaledObject", "forebay-worker"]))
    broken["spec"]["maxReplicas"] = 10
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT_SCHEMA)
    broken = yaml.safe_load(yaml.safe_dump(keda["ScaledObject", "forebay-worker"]))
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 100
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT_SCHEMA)


def test_the_python_reader_renders_what_kubectl_renders() -> None:
    """The fallback used without kubectl agrees with kubectl on these kustomizations."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: nothing to compare the Python reader with")
    for name in ("base", "keda"):
        assert by_kind(render(name)) == by_kind(_load_kustomization(KUBE / name))
