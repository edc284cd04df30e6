"""The shipped Prometheus config, checked by promtool and run for real against live exporters."""

from __future__ import annotations

import math

import pytest
import yaml

from peirce.metrics import CATALOGUE, MetricsExporter
from peirce.monitoring.dashboard import build_dashboard, queries, render_query
from peirce.monitoring.promtest import SHIPPED_CONFIG, PrometheusServer, check_config, render_config


def test_shipped_config_passes_promtool(promtool):
    r = check_config(SHIPPED_CONFIG, promtool)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load(SHIPPED_CONFIG.read_text())["scrape_configs"]}
    assert jobs["peirce"]["file_sd_configs"][0]["files"] == ["/var/lib/peirce/prom-targets/*.json"]
    assert jobs["ray"]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_rendered_copy_changes_only_paths_and_intervals(promtool, tmp_path):
    cfg = render_config(tmp_path / "targets", scrape_interval="1s", ray_sd_file=tmp_path / "ray.json")
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    assert [j["job_name"] for j in cfg["scrape_configs"]] == [j["job_name"] for j in shipped["scrape_configs"]]
    assert cfg["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(tmp_path / "targets" / "*.json")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    r = check_config(path, promtool)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rejects_a_broken_copy(promtool, tmp_path):
    cfg = render_config(tmp_path / "targets", scrape_interval="1s")
    cfg["scrape_configs"][0]["scrape_timeout"] = "5s"  # longer than the 1 s interval: invalid
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(cfg))
    assert check_config(path, promtool).returncode != 0


def test_config_without_peirce_job_is_refused(tmp_path):
    base = tmp_path / "p.yml"
    base.write_text(yaml.safe_dump({"global": {}, "scrape_configs": [{"job_name": "other"}]}))
    with pytest.raises(ValueError, match="no job_name 'peirce'.*other"):
        render_config(tmp_path, base=base)


def _exposed(name: str) -> str:
    return f"{name}_bucket" if CATALOGUE[name][0] == "histogram" else name


def test_every_catalogue_metric_is_scraped_for_every_run(prometheus, metrics_source):
    if not metrics_source.whole_catalogue:
        pytest.skip("this metrics source does not emit the whole catalogue")
    for name in CATALOGUE:
        expr = f'count by (run) ({_exposed(name)}{{job="peirce"}})'
        runs = prometheus.wait_until(lambda: {r["metric"]["run"] for r in prometheus.query(expr)}
                                     >= set(metrics_source.runs), timeout=30, what=expr)
        assert runs


def _assert_dashboard_queries_return_data(prometheus, source) -> None:
    checked = 0
    for title, expr in queries(build_dashboard()):
        if title in source.may_be_empty:
            continue
        for run in source.runs:
            promql = render_query(expr, run=run, rate_interval=source.rate_window)

            def finite_for_run():
                rows = prometheus.query(promql)
                return [r for r in rows if math.isfinite(float(r["value"][1]))
                        and run in (r["metric"].get("run"), r["metric"].get("peirce_run"))]

            rows = prometheus.wait_until(finite_for_run, timeout=60, what=f"{title}: {promql}")
            assert all(r["metric"].get("run", r["metric"].get("peirce_run")) == run for r in rows), rows
            checked += 1
    assert checked >= 20 * len(source.runs)


def test_every_dashboard_query_returns_data_per_run(prometheus, metrics_source):
    _assert_dashboard_queries_return_data(prometheus, metrics_source)


@pytest.mark.slow
def test_dashboard_queries_return_data_from_a_running_smoke_job(promtool, tmp_path):
    """The real thing: a real Prometheus scrapes a live `peirce train` smoke job (Ray actors,
    vLLM, DeepSpeed) discovered through file_sd, and every dashboard query returns data."""
    from prom_sources import smoke_train_source, wait_all_up

    targets = tmp_path / "targets"
    targets.mkdir()
    server = PrometheusServer(render_config(targets, scrape_interval="1s"), workdir=tmp_path / "server")
    with server:
        source = smoke_train_source(targets)
        try:
            wait_all_up(server, targets, source.startup_timeout)
            _assert_dashboard_queries_return_data(server, source)
        finally:
            source.stop()


def test_run_variable_lists_every_run(prometheus, metrics_source):
    run_var = next(v for v in build_dashboard()["templating"]["list"] if v["name"] == "run")
    match = run_var["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
    assert set(prometheus.label_values("run", match)) >= set(metrics_source.runs)


def test_scaled_worker_is_discovered_then_dropped(prometheus, prom_targets_dir):
    """What `peirce scale` relies on: a new exporter is scraped without a reload, then forgotten."""
    m = MetricsExporter(run="scaletest", worker="rollout-9")
    m.inc("peirce_rollout_samples_total", 3)
    port = m.serve(targets_dir=prom_targets_dir)
    instance = f"127.0.0.1:{port}"

    def health():
        return {t["labels"]["instance"]: t["health"] for t in prometheus.active_targets("peirce")}

    prometheus.wait_until(lambda: health().get(instance) == "up", timeout=30, what=f"{instance} up")
    rows = prometheus.wait_until(
        lambda: prometheus.query('peirce_rollout_samples_total{run="scaletest", worker="rollout-9"}'),
        timeout=30, what="scaletest samples")
    assert float(rows[0]["value"][1]) == 3.0
    assert rows[0]["metric"]["peirce_run"] == "scaletest"  # the file_sd target label
    m.withdraw()
    prometheus.wait_until(lambda: instance not in health(), timeout=30, what=f"{instance} dropped")
