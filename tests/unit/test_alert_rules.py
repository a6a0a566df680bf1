"""The shipped alert rules and Grafana dashboard work against the metrics forebay exports.

* ``promtool check rules`` accepts ``deploy/prometheus/alerts.yml``, and ``promtool test rules``
  passes its unit tests (each alert fires once per queue from two processes exporting the same
  store metrics, and stays quiet in the cases it must);
* every metric the rules and the dashboard query is one forebay exports (a renamed metric would
  otherwise leave an alert that never fires);
* every alert names a runbook section that exists in docs/metrics.md;
* the dashboard queries through its ``DS_PROMETHEUS`` data source and offers the ``queue``
  variable.

promtool comes with Debian's ``prometheus`` package (scripts/test.sh installs it on CI); without
it the promtool tests skip locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from forebay.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "forebay.json"
DOCS = ROOT / "docs" / "metrics.md"

_METRIC = re.compile(r"\bforebay_[a-z0-9_]+\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: apt-get install prometheus (scripts/test.sh does)")
        pytest.skip("promtool is missing (Debian package prometheus)")
    return found


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exported_names() -> set[str]:
    """Every sample name forebay's registry exposes (counters with ``_total``, histograms with
    their bucket, count and sum series), read from a live exposition."""
    text = Metrics().exposition().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in _HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
    return names


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_runs_the_rule_unit_tests() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in rules()}  # every alert has a test


def test_every_queried_metric_is_exported() -> None:
    exported = exported_names()
    queried: dict[str, set[str]] = {}
    for rule in rules():
        for name in _METRIC.findall(rule["expr"]):
            queried.setdefault(name, set()).add(f"alert {rule['alert']}")
    board = dashboard()
    targets = [t for p in panels(board) for t in p.get("targets", [])]
    variables = [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    for expr in [t["expr"] for t in targets] + variables:
        for name in _METRIC.findall(expr):
            queried.setdefault(name, set()).add("the dashboard")
    assert len(queried) >= 8  # the parse found the queries
    missing = {name: sorted(where) for name, where in queried.items() if name not in exported}
    assert not missing, f"queried but not exported: {missing}"


def test_every_alert_points_at_its_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in DOCS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in rules():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/metrics.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/metrics.md has no section {rule['alert']}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_the_dashboard_queries_its_data_source_and_offers_the_queue_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["queue"]["includeAll"] and variables["queue"]["multi"]
    shown = [p for p in panels(board) if p["type"] != "row"]
    assert len(shown) >= 10
    for panel in shown:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    titles = " ".join(p["title"].lower() for p in shown)
    for topic in ("depth", "oldest", "throughput", "reclaims", "workers", "intake", "duration"):
        assert topic in titles
    store_queries = [
        t["expr"]
        for p in shown
        for t in p["targets"]
        if "forebay_queue_" in t["expr"] and "$queue" not in t["expr"]
    ]
    assert not store_queries, "store panels follow the queue variable"
