"""The Grafana dashboard as data: up to date, well formed, and every query sound against CATALOGUE.

Grafana itself is not installable here; its queries are run against a real Prometheus
in test_prometheus.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from peirce.metrics import CATALOGUE
from peirce.monitoring.dashboard import (DATASOURCE_UID, build_dashboard, lint_query, metric_names, queries,
                                         render, series_info)

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


@pytest.fixture(scope="module")
def dashboard():
    return json.loads((GRAFANA / "dashboard.json").read_text())


def test_committed_dashboard_is_regenerated():
    committed = (GRAFANA / "dashboard.json").read_text()
    assert committed == render(), "run: python -m peirce.monitoring.dashboard > deploy/grafana/dashboard.json"


def test_model_is_well_formed(dashboard):
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in dashboard["panels"]
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"


def test_every_panel_has_datasource_and_promql(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for p in dashboard["panels"]:
        if p["type"] == "row":
            continue
        assert p["type"] == "timeseries" and p["targets"], p["title"]
        for ds in (p["datasource"], *(t["datasource"] for t in p["targets"])):
            assert ds["type"] == "prometheus" and ds["uid"].strip("${}") in variables, p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and "{{" in t["legendFormat"], (p["title"], t)


def test_every_query_passes_the_catalogue_lint(dashboard):
    problems = {expr: lint_query(expr) for _title, expr in queries(dashboard)}
    assert {e: p for e, p in problems.items() if p} == {}


def test_legends_name_the_run(dashboard):
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            assert t["legendFormat"].startswith(("{{run}}", "{{peirce_run}}")), (p["title"], t["legendFormat"])


def test_run_variable_is_multi_select_over_run_label(dashboard):
    run = next(v for v in dashboard["templating"]["list"] if v["name"] == "run")
    assert run["multi"] and run["includeAll"] and run["allValue"] == ".*"
    assert run["query"]["query"] == run["definition"]
    assert run["definition"].endswith(", run)")


@pytest.mark.parametrize("title", [
    "Samples / s", "Tokens / s", "Queue depth", "Staleness (policy versions)", "Weight-sync latency",
    "Weight-sync bytes / s", "Reward, last learner batch", "Loss", "KL to reference", "Entropy",
    "Gradient norm", "Live workers by role", "Rejected frames / s"])
def test_required_panels_exist(dashboard, title):
    assert title in {p["title"] for p in dashboard["panels"]}


def test_quantile_panels_use_histograms(dashboard):
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"] if "targets" in p}
    assert "histogram_quantile" in by_title["Staleness (policy versions)"]
    assert "peirce_staleness_mean_steps" in by_title["Staleness (policy versions)"]
    assert "peirce_weight_sync_seconds_bucket" in by_title["Weight-sync latency"]


def test_most_of_the_catalogue_is_on_the_dashboard(dashboard):
    used = {n.removesuffix("_bucket") for _t, e in queries(dashboard) for n in metric_names(e)}
    missing = set(CATALOGUE) - used
    assert not missing, f"catalogue metrics without a panel: {sorted(missing)}"


# The lint must be able to fail: each bad query breaks (at least) the named rule.
@pytest.mark.parametrize("expr, message", [
    ('sum by (run) (rate(peirce_learner_loss{run=~"$run"}[1m]))', "a gauge, not a counter"),
    ('sum by (run) (peirce_rollout_samples_total{run=~"$run"})', "used without rate()"),
    ('histogram_quantile(0.5, sum by (run) (rate(peirce_staleness_steps_bucket{run=~"$run"}[1m])))',
     "without aggregating by (..., le)"),
    ('histogram_quantile(0.5, sum by (run, le) (rate(peirce_rollout_tokens_total{run=~"$run"}[1m])))',
     "not a _bucket series"),
    ('sum by (run, task) (peirce_learner_loss{run=~"$run"})', "grouping label 'task'"),
    ('avg by (run) (peirce_learner_los{run=~"$run"})', "not produced by any CATALOGUE metric"),
    ('avg by (run) (peirce_learner_loss{worker="x"})', 'not filtered by run=~"$run"'),
    ('peirce_staleness_steps{run=~"$run"}', "not produced by any CATALOGUE metric"),
])
def test_lint_catches(expr, message):
    problems = lint_query(expr)
    assert problems and any(message in p for p in problems), problems


def test_series_info_maps_exposed_names():
    assert series_info("peirce_rollout_samples_total")[0] == "counter"
    assert series_info("peirce_weight_sync_seconds_bucket") == (
        "histogram_bucket", ("run", "worker", "side", "le"))
    assert series_info("peirce_learner_loss_bucket") is None


def test_provisioning_matches_dashboard(dashboard):
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    default = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")["current"]["value"]
    assert default == source["uid"]
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "peirce.yml").read_text())
    (provider,) = prov["providers"]
    assert prov["apiVersion"] == 1 and provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_builder_output_is_deterministic():
    assert build_dashboard() == build_dashboard()
