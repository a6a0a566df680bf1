"""The Pulumi program for the Label Studio writer (deploy/pulumi) run with Pulumi's mocks: no
cloud, no cluster, no pulumi CLI. It declares a Secret whose values stay secrets (encrypted in
the state), a ConfigMap for the rest, and a Deployment that runs the writer worker with the
secrets as environment variables, the image and replica count of the stack's config, probes
on its metrics port and a grace above its shutdown grace; it refuses more than one writer on
its ReadWriteOnce volume claim, and keeps an explicit 0 in the config."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pulumi
import pytest
from pulumi.runtime import rpc

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "deploy" / "pulumi"
PROJECT = "forebay-hf-writer"

SECRETS = {
    "hfToken": "hf_secret_token_value",
    "databaseUrl": "postgresql://forebay:pw@postgres:5432/forebay",
    "webhookSecret": "label-studio-shared-secret",
}


class Mocks(pulumi.runtime.Mocks):
    """Every resource is created with its inputs as outputs; each one is recorded."""

    def __init__(self) -> None:
        self.created: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        metadata = dict(outputs.get("metadata") or {})
        metadata.setdefault("name", f"{args.name}-1a2b3c")  # as Pulumi auto-names them
        outputs["metadata"] = metadata
        self.created[args.typ, args.name] = outputs
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


def configure(config: dict[str, str], secret: set[str]) -> None:
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{key}": value for key, value in config.items()},
        [f"{PROJECT}:{key}" for key in secret],
    )


STACK = {
    "image": "registry.example.com/forebay:0.1.0-hf",
    "replicas": "1",
    "namespace": "ingest",
    "hfRepo": "my-org/annotations",
}


@pytest.fixture
def mocks() -> Iterator[Mocks]:
    # Pulumi's test runner drives the thread's current event loop; the async tests before this
    # one closed theirs, so each Pulumi test gets a loop of its own.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = Mocks()
    try:
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="test", preview=False)
        configure({**STACK, **SECRETS}, secret=set(SECRETS))
        yield mocks
    finally:
        pulumi.runtime.set_all_config({})
        _close_with_its_executor(loop)


def _close_with_its_executor(loop: asyncio.AbstractEventLoop) -> None:
    """Close the test's loop once the threads of its executor ended. Pulumi's mock engine
    runs in those threads and leaves an event loop in each (never closed); they are freed when
    the threads end, here, and their warnings are Pulumi's, not forebay's."""
    previous = sys.unraisablehook
    sys.unraisablehook = _ignore_unclosed
    try:
        loop.run_until_complete(loop.shutdown_default_executor())
        gc.collect()
    finally:
        sys.unraisablehook = previous
        asyncio.set_event_loop(None)
        loop.close()


def _ignore_unclosed(unraisable: Any) -> None:
    if not isinstance(unraisable.exc_value, ResourceWarning):
        sys.__unraisablehook__(unraisable)


def program() -> ModuleType:
    """The program's module, freshly imported (it declares its resources at import)."""
    sys.path.insert(0, str(PROGRAM))
    try:
        for name in ("__main__pulumi", "hf_writer"):
            sys.modules.pop(name, None)
        spec = importlib.util.spec_from_file_location("__main__pulumi", PROGRAM / "__main__.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(PROGRAM))


def unwrap(value: Any) -> Any:
    """A resource's inputs as the engine got them, secrets unwrapped (and counted)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def created(mocks: Mocks, kind: str) -> dict[str, Any]:
    (inputs,) = [v for (typ, _), v in mocks.created.items() if typ.endswith(f":{kind}")]
    return inputs


@pulumi.runtime.test
def test_the_secret_holds_the_token_and_the_database_url_as_secrets(mocks: Mocks) -> Any:
    writer = program().writer

    def check(args: list[Any]) -> None:
        string_data, is_secret = args[:2]
        assert string_data == {
            "HF_TOKEN": SECRETS["hfToken"],
            "FOREBAY_URL": SECRETS["databaseUrl"],
            "FOREBAY_LABELSTUDIO_SECRET": SECRETS["webhookSecret"],
        }
        assert is_secret is True
        # What the engine stores: one secret envelope, nothing in clear.
        sent = created(mocks, "Secret")["stringData"]
        assert sent[rpc._special_sig_key] == rpc._special_secret_sig
        assert all(value not in str(created(mocks, "ConfigMap")) for value in SECRETS.values())
        assert all(value not in str(created(mocks, "Deployment")) for value in SECRETS.values())

    return pulumi.Output.all(
        writer.secret.string_data,
        pulumi.Output.from_input(writer.secret.string_data).is_secret(),
        writer.config_map.id,  # every resource created before the check reads them
        writer.deployment.id,
    ).apply(check)


@pulumi.runtime.test
def test_a_token_set_in_clear_config_is_still_kept_secret(mocks: Mocks) -> Any:
    configure({**STACK, **SECRETS}, secret=set())  # `pulumi config set` without --secret
    writer = program().writer

    def check(args: list[Any]) -> None:
        is_secret = args[1]
        assert is_secret is True
        sent = created(mocks, "Secret")["stringData"]
        assert sent[rpc._special_sig_key] == rpc._special_secret_sig

    return pulumi.Output.all(writer.secret.id, writer.secret.string_data.is_secret()).apply(check)


@pulumi.runtime.test
def test_the_deployment_runs_the_writer_with_the_secrets_as_env(mocks: Mocks) -> Any:
    writer = program().writer

    def check(names: list[str]) -> None:
        secret_name, config_name, claim_name = names
        deployment = unwrap(created(mocks, "Deployment"))
        config = created(mocks, "ConfigMap")
        assert deployment["metadata"]["namespace"] == "ingest"
        spec = deployment["spec"]
        assert spec["replicas"] == 1  # from the stack's config
        assert spec["strategy"] == {"type": "Recreate"}  # one writer at a time on the volume
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == STACK["image"]
        assert container["args"] == [
            "worker",
            "forebay.contrib.labelstudio:app",
            "--metrics-port",
            "9100",
        ]
        from_secret = {
            env["name"]: env["valueFrom"]["secretKeyRef"]
            for env in container["env"]
            if "secretKeyRef" in env.get("valueFrom", {})
        }
        assert from_secret == {
            key: {"name": secret_name, "key": key}
            for key in ("HF_TOKEN", "FOREBAY_URL", "FOREBAY_LABELSTUDIO_SECRET")
        }
        assert container["envFrom"] == [{"configMapRef": {"name": config_name}}]
        assert config["data"]["FOREBAY_HF_REPO"] == STACK["hfRepo"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"]["path"] == path
            assert ports[container[probe]["httpGet"]["port"]] == 9100
        grace_s = float(config["data"]["FOREBAY_SHUTDOWN_GRACE_S"])
        assert pod["terminationGracePeriodSeconds"] >= grace_s + 15
        assert pod["securityContext"]["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim_name
        assert config["data"]["FOREBAY_DATASET"].startswith("/data/")
        # What Pulumi would send is a valid Kubernetes object, each of them.
        for kind in ("Deployment", "ConfigMap", "Secret", "PersistentVolumeClaim"):
            kubernetes_validate.validate(unwrap(created(mocks, kind)), "1.32.0", strict=True)

    assert writer.volume_claim is not None
    return pulumi.Output.all(
        writer.secret.metadata.name,
        writer.config_map.metadata.name,
        writer.volume_claim.metadata.name,
        writer.deployment.id,
    ).apply(lambda args: check(args[:3]))


@pulumi.runtime.test
def test_a_staging_database_and_a_dataset_on_an_object_store(mocks: Mocks) -> Any:
    """The optional staging URL is one more secret; a dataset on s3:// needs no volume claim,
    so more than one replica is accepted then."""
    configure(
        {
            **STACK,
            **SECRETS,
            "stageUrl": "postgresql://stage:pw@pg/stage",
            "dataset": "s3://b/p",
            "replicas": "3",
        },
        secret={*SECRETS, "stageUrl"},
    )
    writer = program().writer

    def check(string_data: dict[str, str]) -> None:
        assert string_data["FOREBAY_STAGE_URL"] == "postgresql://stage:pw@pg/stage"
        assert unwrap(created(mocks, "Deployment"))["spec"]["replicas"] == 3
        container = unwrap(created(mocks, "Deployment"))["spec"]["template"]["spec"]
        env = {e["name"] for e in container["containers"][0]["env"]}
        assert "FOREBAY_STAGE_URL" in env
        assert {v["name"]: v for v in container["volumes"]}["data"] == {
            "name": "data",
            "emptyDir": {},
        }
        assert not any(typ.endswith(":PersistentVolumeClaim") for typ, _ in mocks.created)

    assert writer.volume_claim is None
    return pulumi.Output.all(writer.secret.string_data, writer.deployment.id).apply(
        lambda args: check(args[0])
    )


@pytest.mark.parametrize("replicas", ["2", "5"])
def test_more_than_one_writer_on_the_volume_claim_is_refused(mocks: Mocks, replicas: str) -> None:
    """The dataset folder is on a ReadWriteOnce claim: one writer at a time. The program stops
    with a clear error before declaring anything."""
    configure({**STACK, **SECRETS, "replicas": replicas}, secret=set(SECRETS))
    with pytest.raises(pulumi.RunError) as refused:
        program()
    message = str(refused.value)
    assert f"replicas is {replicas}" in message
    assert "ReadWriteOnce" in message and "one writer at a time" in message
    assert "s3://" in message  # what to do instead
    assert mocks.created == {}


def test_a_negative_setting_is_refused(mocks: Mocks) -> None:
    configure({**STACK, **SECRETS, "shutdownGraceS": "-1"}, secret=set(SECRETS))
    with pytest.raises(pulumi.RunError, match="shutdownGraceS is -1"):
        program()
    assert mocks.created == {}


@pulumi.runtime.test
def test_an_explicit_zero_is_kept_not_replaced_by_the_default(mocks: Mocks) -> Any:
    """replicas 0 (the writer scaled to zero), shutdownGraceS 0 and commitIntervalS 0 are
    what the stack says, not the defaults (1, 30 and 120)."""
    configure(
        {**STACK, **SECRETS, "replicas": "0", "shutdownGraceS": "0", "commitIntervalS": "0"},
        secret=set(SECRETS),
    )
    writer = program().writer

    def check(_: Any) -> None:
        deployment = unwrap(created(mocks, "Deployment"))
        data = created(mocks, "ConfigMap")["data"]
        assert deployment["spec"]["replicas"] == 0
        assert data["FOREBAY_SHUTDOWN_GRACE_S"] == "0"
        assert data["FOREBAY_HF_COMMIT_INTERVAL_S"] == "0"
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 15

    return pulumi.Output.all(writer.config_map.id, writer.deployment.id).apply(check)


def test_the_worker_is_started_as_docs_labelstudio_says() -> None:
    """The program runs the app that docs/labelstudio.md serves, as a standalone worker."""
    docs = (ROOT / "docs" / "labelstudio.md").read_text()
    assert "forebay serve forebay.contrib.labelstudio:app" in docs
    assert "forebay.contrib.labelstudio:app" in (PROGRAM / "hf_writer.py").read_text()
    assert importlib.util.find_spec("forebay.contrib.labelstudio") is not None
