"""RunHealth: the guards' verdicts as a user sees them -- log lines, record fields,
Prometheus series scraped over real HTTP on loopback, and run_summary.json."""

from __future__ import annotations

import logging
import urllib.request

import numpy as np
import pytest

from peirce.config import TrainConfig
from peirce.metrics import MetricsExporter
from peirce.trainer.health import RunHealth, tasks_exhausted, untrained_counts
from peirce.trainer.run_dir import RunDir
from peirce.trainer.sync_guard import WeightSyncError
from peirce.transport.wire import RolloutSample, ScoredSample


def sample(reward: float, format_ok: bool = True, correct: bool = False) -> ScoredSample:
    s = RolloutSample(task_id="t", family="deduction", level=1, group_id="g", sample_index=0,
                      prompt_token_ids=np.zeros(2, np.int32), response_token_ids=np.zeros(1, np.int32),
                      response_logprobs=np.zeros(1, np.float32), policy_version=0)
    return ScoredSample(sample=s, reward=reward, correct=correct, format_ok=format_ok)


GAP = "logprob_gap_mean"  # the learner's train-step metric
DEAD = [[sample(-0.5)] * 4, [sample(-0.5)] * 4]  # well formed, all wrong: the task is too hard
ALIVE = [[sample(3.0, correct=True), sample(-0.5)]]


@pytest.fixture
def health(tmp_path):
    cfg = TrainConfig.model_validate({"name": "ded", "run_dir": str(tmp_path), "algorithm": {"advantage": "grpo"},
                                      "trainer": {"no_signal_steps": 3, "logprob_gap_stop": 1.0}})
    metrics = MetricsExporter(run="ded", worker="controller")
    port = metrics.serve()
    yield RunHealth(cfg, RunDir.create(tmp_path), metrics), port
    metrics.withdraw()


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_no_signal_is_logged_once_recorded_exported_and_summarised(health, caplog):
    h, port = health
    caplog.set_level(logging.INFO, logger="peirce.trainer.health")
    fields = [h.on_step(step, {GAP: 0.02}, DEAD) for step in (1, 2, 3, 4)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no learning signal" in warnings[0].getMessage()
    assert "too hard" in warnings[0].getMessage()
    assert fields[3] == {"no_signal_steps": 4, "no_signal": True, "no_signal_cause": "task_too_hard",
                         "logprob_gap_mean": 0.02}
    text = scrape(port)
    assert 'peirce_trainer_no_signal_streak_steps{run="ded",worker="controller"} 4.0' in text
    assert 'peirce_trainer_no_signal_steps_total{run="ded",worker="controller"} 4.0' in text
    assert 'peirce_learner_logprob_gap_nats{run="ded",worker="controller"} 0.02' in text
    summary = h.run_dir.read_summary()
    assert summary["no_signal"] is True and summary["status"] == "running" and summary["step"] == 4
    h.on_step(5, {}, ALIVE)
    assert any("learning signal is back at step 5" in r.getMessage() for r in caplog.records)
    assert 'peirce_trainer_no_signal_streak_steps{run="ded",worker="controller"} 0.0' in scrape(port)
    h.write_summary("done")
    summary = h.run_dir.read_summary()
    assert summary["status"] == "done" and summary["no_signal"] is True and summary["no_signal_at_end"] is False
    assert summary["no_signal_episodes"] == [{"start": 1, "end": 4, "steps": 4, "cause": "task_too_hard"}]


def test_broken_weight_sync_stops_with_a_clear_error(health, caplog):
    h, _ = health
    h.on_step(1, {GAP: 1.5}, ALIVE)
    assert h.stop is None
    h.on_step(2, {GAP: 1.7}, ALIVE)
    assert h.stop and any(r.levelno == logging.ERROR for r in caplog.records)
    with pytest.raises(WeightSyncError, match=r"weight updates are not reaching the rollout engines.*"
                                              r"Checkpoint saved at /ckpt/step-2"):
        h.raise_stop("/ckpt/step-2")
    summary = h.run_dir.read_summary()
    assert summary["logprob_gap_max"] == 1.7 and summary["logprob_gap_last"] == 1.7


def test_signal_state_survives_resume(health):
    h, _ = health
    for step in (1, 2):
        h.on_step(step, {}, DEAD)
    state = h.state_dict()
    h2 = RunHealth(TrainConfig.model_validate({"name": "ded", "run_dir": str(h.run_dir.root)}), h.run_dir, h.metrics)
    h2.load_state_dict(state, step=2)
    assert h2.on_step(3, {}, DEAD)["no_signal"] is True



def test_a_run_that_ran_out_of_tasks_says_so_and_why():
    counts = untrained_counts(["filtered", "stale", "filtered", "gated"])
    assert counts == {"filtered": 2, "gated": 1, "stale": 1}
    line = tasks_exhausted("masa-dapo-smoke", 0, 4, counts)
    assert "ran out before trainer.max_steps=4: nothing was trained" in line
    assert "2 filtered, 1 gated, 1 stale" in line and "overlong filtering" in line
    partial = tasks_exhausted("ded", 3, 8, {"stale": 1})
    assert "3 of 8 steps trained" in partial and "1 stale" in partial and "overlong" not in partial
    assert "groups left untrained: none" in tasks_exhausted("ded", 3, 8, {})


def test_the_summary_records_an_early_end(health):
    h, _ = health
    h.write_summary("done", ended_early="ded: the task source ran out")
    assert h.run_dir.read_summary()["ended_early"] == "ded: the task source ran out"
    h.write_summary("done")
    assert h.run_dir.read_summary()["ended_early"] is None
