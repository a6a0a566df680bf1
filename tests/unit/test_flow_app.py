"""Flow control as an app declares it: limits and keys on handlers and queues, a source's
intake rate, and tenant quotas (given, or read from ``FOREBAY_TENANT_QUOTAS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import forebay
from forebay import ConfigError, FlowLimits, Forebay, Job, NewJob, Rate, TenantQuotaFull
from forebay.settings import parse_tenant_quotas, tenant_quotas_from_env


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Forebay:
    monkeypatch.delenv("FOREBAY_TENANT_QUOTAS", raising=False)
    return Forebay(f"sqlite:///{tmp_path}/jobs.db")


def test_the_flow_names_are_public() -> None:
    for name in ("Rate", "FlowLimits", "TenantQuotaFull"):
        assert name in forebay.__all__
    assert issubclass(TenantQuotaFull, forebay.QueueFull)


# -- handlers and queues --------------------------------------------------------------------------
def test_a_handler_declares_its_queue_limits(app: Forebay) -> None:
    @app.handler(
        "fetch",
        rate_limit="50/s",
        rate_limit_key="payload.host",
        rate_limit_per_key="10/m",
        global_concurrency=4,
        concurrency_key="tenant",
        concurrency_per_key=2,
        fair_key="tenant",
        priority_aging=30,
    )
    async def fetch(job: Job) -> None: ...

    assert app.queues["fetch"].limits == FlowLimits(
        rate=Rate(50, 1.0),
        rate_per_key=Rate(10, 60.0),
        concurrency=4,
        concurrency_per_key=2,
        fair=True,
        aging_s=30.0,
    )


def test_a_bad_limit_is_refused_when_declared(app: Forebay) -> None:
    with pytest.raises(ConfigError, match="queue 'fetch': bad rate '50 per second'"):

        @app.handler("fetch", rate_limit="50 per second")
        async def fetch_fast(job: Job) -> None: ...

    with pytest.raises(ConfigError, match="rate_limit_key and rate_limit_per_key go together"):

        @app.handler("fetch", rate_limit_key="payload.host")
        async def fetch(job: Job) -> None: ...

    assert "fetch" not in app.queues


def test_a_producer_only_app_declares_the_keys_it_works_out(app: Forebay) -> None:
    app.queue("fetch", fair_key="tenant", max_depth=100)
    app.queue("fetch", concurrency_key="payload.host")  # again: changes only what is given
    config = app.queues["fetch"]
    assert (config.fair_key, config.concurrency_key, config.max_depth) == (
        "tenant",
        "payload.host",
        100,
    )
    job = config.with_flow_keys(NewJob.create("fetch", {"host": "a.org"}, tenant="acme"))
    assert (job.fair_key, job.concurrency_key, job.rate_key) == ("acme", "a.org", None)
    with pytest.raises(ConfigError, match="fair_key must be a callable or a path"):
        app.queue("other", fair_key="tenant.name")


def test_declaring_a_handled_queue_again_keeps_its_limits(app: Forebay) -> None:
    @app.handler("fetch", rate_limit="5/s", fair_key="tenant")
    async def fetch(job: Job) -> None: ...

    app.queue("fetch", max_depth=10)
    assert app.queues["fetch"].limits == FlowLimits(rate=Rate(5, 1.0), fair=True)
    assert app.queues["fetch"].fair_key == "tenant"


def test_a_source_declares_its_intake_rate(app: Forebay) -> None:
    source = app.source("forms", queue="forms", rate_limit="20/s")
    assert source.rate_limit == Rate(20, 1.0)
    assert app.source("hooks", queue="forms").rate_limit is None
    assert app.source("burst", queue="forms", rate_limit=Rate(5, 1.0, 10)).rate_limit == Rate(
        5, 1.0, 10
    )
    with pytest.raises(ConfigError, match="source 'bad': rate_limit: bad rate '20'"):
        app.source("bad", queue="forms", rate_limit="20")
    assert "bad" not in app.sources


# -- tenant quotas ----------------------------------------------------------------------------------
def test_tenant_quotas_are_written_tenant_equals_cap() -> None:
    assert parse_tenant_quotas("acme=1000, *=500") == {"acme": 1000, "*": 500}
    assert parse_tenant_quotas(" globex = 3 ,") == {"globex": 3}
    assert parse_tenant_quotas("") == {}
    assert tenant_quotas_from_env({"FOREBAY_TENANT_QUOTAS": "a=1"}) == {"a": 1}
    assert tenant_quotas_from_env({}) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("acme", "bad entry 'acme': write TENANT=MAX_JOBS"),
        ("acme=lots", "bad entry 'acme=lots'"),
        ("acme=-1", "bad entry"),
        ("acme=0", "the quota of 'acme' must be a whole number of at least 1"),
        ("=5", "tenant must be"),
        ("a b=5", "tenant must be"),
        ("acme=1,acme=2", "'acme' is given twice"),
    ],
)
def test_bad_tenant_quotas_name_the_variable_and_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        tenant_quotas_from_env({"FOREBAY_TENANT_QUOTAS": text})
    assert "FOREBAY_TENANT_QUOTAS" in str(caught.value)


def test_an_app_reads_its_tenant_quotas_from_the_environment_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    monkeypatch.setenv("FOREBAY_TENANT_QUOTAS", "acme=1000,*=500")
    assert dict(Forebay(url).tenant_quotas) == {"acme": 1000, "*": 500}
    assert dict(Forebay(url, tenant_quotas={"globex": 7}).tenant_quotas) == {"globex": 7}
    assert dict(Forebay(url, tenant_quotas={}).tenant_quotas) == {}
    monkeypatch.setenv("FOREBAY_TENANT_QUOTAS", "acme=many")
    with pytest.raises(ConfigError, match="FOREBAY_TENANT_QUOTAS"):
        Forebay(url)
    with pytest.raises(ConfigError, match="tenant_quotas: the quota of 'acme'"):
        Forebay(url, tenant_quotas={"acme": 0})
    monkeypatch.delenv("FOREBAY_TENANT_QUOTAS")
    assert dict(Forebay(url).tenant_quotas) == {}
