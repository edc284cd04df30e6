"""The exporter serves real HTTP on loopback and announces itself for file-based discovery."""

import json
import urllib.request

import pytest

from peirce.metrics import CATALOGUE, MetricsExporter


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_exporter_serves_labelled_metrics_and_announces_target(tmp_path):
    m = MetricsExporter(run="deduction", worker="rollout-0")
    port = m.serve(targets_dir=tmp_path)
    m.inc("peirce_rollout_samples_total", 5)
    m.set("peirce_reward_mean", 2.5, task="deduction", level="1")
    m.observe("peirce_staleness_steps", 1)
    text = _scrape(port)
    assert 'peirce_rollout_samples_total{run="deduction",worker="rollout-0"} 5.0' in text
    assert 'peirce_reward_mean{level="1",run="deduction",task="deduction",worker="rollout-0"} 2.5' in text
    target = json.loads((tmp_path / "deduction-rollout-0.json").read_text())
    assert target[0]["targets"] == [f"127.0.0.1:{port}"]
    m.withdraw()
    assert not (tmp_path / "deduction-rollout-0.json").exists()


def test_unknown_metric_is_rejected_by_name():
    with pytest.raises(KeyError, match="not in peirce.metrics.CATALOGUE"):
        MetricsExporter(run="r", worker="w").inc("peirce_made_up_total")


def test_catalogue_names_follow_convention():
    for name, (kind, _doc, _labels) in CATALOGUE.items():
        assert name.startswith("peirce_")
        assert kind in {"counter", "gauge", "histogram"}
        if kind == "counter":
            assert name.endswith("_total"), name


def test_negative_rewards_are_summed_without_breaking_counters():
    m = MetricsExporter(run="r", worker="reward-0")
    port = m.serve()
    for r in (3.0, -0.5, -3.0):
        m.add_reward(r, task="deduction", level="1")
    m.add_reward(0.5, task="uppercase", level="1")
    text = _scrape(port)
    lab = 'level="1",run="r",task="deduction",worker="reward-0"'
    assert f"peirce_reward_positive_sum_total{{{lab}}} 3.0" in text
    assert f"peirce_reward_negative_sum_total{{{lab}}} 3.5" in text
    assert f"peirce_reward_samples_total{{{lab}}} 3.0" in text
    # a task that never scored below zero still exposes its negative series (at 0)
    assert 'peirce_reward_negative_sum_total{level="1",run="r",task="uppercase",worker="reward-0"} 0.0' in text


def test_run_health_series_coexist_in_one_registry():
    """The no-signal gauge and counter share a stem: distinct names keep prometheus_client from refusing one."""
    m = MetricsExporter(run="r", worker="controller")
    port = m.serve()
    m.set("peirce_trainer_no_signal_streak_steps", 3)
    m.inc("peirce_trainer_no_signal_steps_total", 1)
    m.inc("peirce_trainer_no_signal_steps_total", 0)  # a step with signal still exposes the series
    m.set("peirce_learner_logprob_gap_nats", 0.04)
    text = _scrape(port)
    lab = 'run="r",worker="controller"'
    assert "# TYPE peirce_trainer_no_signal_streak_steps gauge" in text
    assert "# TYPE peirce_trainer_no_signal_steps_total counter" in text
    assert f"peirce_trainer_no_signal_streak_steps{{{lab}}} 3.0" in text
    assert f"peirce_trainer_no_signal_steps_total{{{lab}}} 1.0" in text
    assert f"peirce_learner_logprob_gap_nats{{{lab}}} 0.04" in text
