"""benchmarks/bench_masa.py's pure parts: running means, the target, first reach, the
GRPO / MASA ratio with its None cases, the token tally against a real GroupPlanner (no
Ray; the curriculum is a list, as in test_bench_async.py), and both runs' configs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_masa  # noqa: E402
from bench_masa import (GenerationTally, StepPoint, best_running_mean, choose_target, cumulative_at,  # noqa: E402
                        first_reach, median_ratio, running_means, speedup, step_points)

from peirce.config import TrainConfig, load_config  # noqa: E402
from peirce.config.profiles import as_overrides  # noqa: E402
from peirce.masa.config import MetaConfig  # noqa: E402
from peirce.testing import ListFeed  # noqa: E402
from peirce.trainer.planner import Delivered, GroupPlanner, PlanConfig  # noqa: E402
from peirce.transport.wire import RequestSampling, RolloutSample  # noqa: E402


def curve(rewards, tokens_per_step=10, seconds_per_step=1.0):
    return [StepPoint(step=i + 1, solution_tokens=tokens_per_step * (i + 1), meta_tokens=0,
                      wall_s=seconds_per_step * (i + 1), reward=r) for i, r in enumerate(rewards)]


def test_running_means_start_once_the_window_is_full():
    assert running_means([1.0, 2.0, 3.0, 4.0], 2) == [None, 1.5, 2.5, 3.5]
    assert running_means([0.5], 1) == [0.5]
    assert running_means([1.0, 2.0], 3) == [None, None]
    with pytest.raises(ValueError, match="window"):
        running_means([1.0], 0)


def test_target_is_the_lower_best_running_mean_and_says_whose():
    runs = {"grpo": curve([0.1, 0.3, 0.5, 0.4]), "masa": curve([0.1, 0.2, 0.3, 0.3])}
    assert best_running_mean(runs["grpo"], 2) == pytest.approx(0.45)  # (0.5 + 0.4) / 2
    assert best_running_mean(runs["masa"], 2) == pytest.approx(0.3)
    target, rule = choose_target(runs, 2)
    assert target == pytest.approx(0.3) and "masa" in rule and "2-step" in rule


def test_no_target_when_a_run_is_shorter_than_the_window():
    target, rule = choose_target({"grpo": curve([0.1, 0.2, 0.3]), "masa": curve([0.1])}, 2)
    assert target is None and "masa" in rule and "grpo" not in rule


def test_first_reach_is_the_first_full_window_at_or_above_the_target():
    points = curve([0.0, 0.6, 0.2, 0.9, 0.9])
    assert first_reach(points, 0.3, 2).step == 2  # (0.0 + 0.6) / 2
    assert first_reach(points, 0.55, 2).step == 4  # (0.2 + 0.9) / 2
    assert first_reach(points, 0.9, 2).step == 5
    assert first_reach(points, 0.95, 2) is None
    assert first_reach(points, 0.0, 3).step == 3  # never before the window is full
    # the target taken from one run's own running means is reached by that run (no float miss)
    rewards = [0.1, 0.7, 0.2]
    target = best_running_mean(curve(rewards), 3)
    assert first_reach(curve(rewards), target, 3).step == 3


def test_a_run_reaches_the_target_both_chose():
    runs = {"grpo": curve([0.2, 0.4, 0.6, 0.8]), "masa": curve([0.1, 0.1, 0.5, 0.3])}
    target, _ = choose_target(runs, 2)
    assert all(first_reach(p, target, 2) is not None for p in runs.values())


def test_speedup_is_grpo_over_masa_or_none_with_a_reason():
    assert speedup(128.0, 100.0, "tokens") == (1.28, None)
    assert speedup(50.0, 100.0, "tokens") == (0.5, None)
    ratio, reason = speedup(None, 100.0, "tokens")
    assert ratio is None and reason == "grpo never reached the target reward"
    ratio, reason = speedup(None, None, "tokens")
    assert ratio is None and reason == "grpo and masa never reached the target reward"
    ratio, reason = speedup(10.0, 0, "solution_tokens")
    assert ratio is None and "solution_tokens" in reason


def test_median_over_seeds_skips_missing_ratios_and_counts_them():
    assert median_ratio([1.0, None, 3.0, 2.0]) == (2.0, 1)
    assert median_ratio([None, None]) == (None, 2)
    assert median_ratio([0.5]) == (0.5, 0)


def test_step_points_count_the_tokens_delivered_by_each_step_end():
    events = [(10.0, 5, 0), (11.0, 0, 7), (12.5, 5, 0), (20.0, 9, 3)]
    assert cumulative_at(events, 9.0) == (0, 0)
    assert cumulative_at(events, 12.5) == (10, 7)
    rows = [{"step": 1, "time": 12.0, "reward_mean": 0.25, "response_tokens": 4},
            {"step": 2, "time": 21.0, "reward_mean": 0.5, "response_tokens": 6}]
    points = step_points(rows, events, t0=9.0)
    assert points == [StepPoint(1, 5, 7, 3.0, 0.25, 4), StepPoint(2, 19, 10, 12.0, 0.5, 10)]


# ---------------------------------------------------------------- the tally on a real planner


def samples(msg, lengths, texts=None):
    texts = texts or [""] * len(lengths)
    return [RolloutSample(task_id=msg.task.id, family=msg.task.family, level=1, group_id=msg.group_id,
                          sample_index=i, prompt_token_ids=np.arange(3), response_token_ids=np.arange(n),
                          response_logprobs=np.zeros(n, np.float32), policy_version=0, completion=t)
            for i, (n, t) in enumerate(zip(lengths, texts))]


def masa_planner(**gating):
    meta = MetaConfig(enabled=True, meta_rollouts=2, solution_rollouts=2, mode="sequential",
                      gating={"enabled": True, "audit_share": 0.0, **gating},
                      cutoff={"enabled": True, "factor": 2.0, "min_tokens": 1})
    return GroupPlanner(PlanConfig(max_staleness=1, prompts_per_step=2, n_samples=2, meta=meta,
                                   sampling=RequestSampling(temperature=1.0, max_tokens=32)))


def test_tally_splits_meta_from_solution_tokens_and_names_each_caps_source():
    planner = masa_planner()
    clock = iter(range(100)).__next__
    tally = GenerationTally(planner, clock=clock)
    first, second = planner.admit(ListFeed(2))
    assert tally.caps == []  # sequential: admission sends only meta requests
    valid = '{"pass_rate": 4, "solution_length": 5}'
    out = planner.on_rollout_result(first.gid, Delivered(samples(first.messages[0], [6, 6], [valid, "junk"])))
    (sol,) = [d for d in out if d.queue == "rollout"]
    assert sol.messages[0].sampling.max_tokens == 10 and tally.caps == [(10, 2, "prediction")]
    planner.on_rollout_result(second.gid, Delivered(samples(second.messages[0], [4, 4], ["x", "y"])))
    assert tally.caps[-1] == (32, 2, "fallback")  # no valid length: the cutoff's max
    planner.on_rollout_result(sol.gid, Delivered(samples(sol.messages[0], [10, 3])))
    assert tally.events == [(0, 0, 12), (1, 0, 8), (2, 13, 0)]
    assert (tally.meta_samples, tally.valid_pass_rate, tally.valid_length, tally.gated) == (4, 1, 1, 0)


def test_tally_counts_a_gated_prompt_and_no_solution_request_for_it():
    planner = masa_planner()
    tally = GenerationTally(planner, clock=lambda: 0.0)
    (meta,) = planner.admit(ListFeed(1))[:1]
    all_fail = '{"pass_rate": 0, "solution_length": 5}'
    planner.on_rollout_result(meta.gid, Delivered(samples(meta.messages[0], [3, 3], [all_fail, all_fail])))
    assert tally.gated == 1 and tally.caps == [] and tally.events == [(0.0, 0, 6)]


def test_tally_records_grpo_admissions():
    planner = GroupPlanner(PlanConfig(max_staleness=0, prompts_per_step=2, n_samples=4,
                                      sampling=RequestSampling(temperature=1.0, max_tokens=32)))
    tally = GenerationTally(planner)
    assert len(planner.admit(ListFeed(5))) == 2
    assert tally.caps == [(32, 4, "admission")] * 2


# ---------------------------------------------------------------- both runs' configs


def test_runs_share_everything_but_meta_and_validate(tmp_path):
    cfgs = {}
    for kind in ("grpo", "masa"):
        values = bench_masa.run_config(kind, model="tiny", steps=7, seed=3, switch_step=2, run_dir=tmp_path / kind)
        cfgs[kind] = load_config(TrainConfig, None, as_overrides(values))
    grpo, masa = cfgs["grpo"], cfgs["masa"]
    assert not grpo.algorithm.meta.enabled and masa.algorithm.meta.enabled
    meta = masa.algorithm.meta
    assert (meta.mode, meta.switch_step, meta.gating.enabled, meta.cutoff.enabled) == ("sequential", 2, True, True)
    assert meta.cutoff.max_tokens is None  # the fallback is GRPO's own limit, not a lower clamp
    assert meta.expert.enabled and not meta.hint.enabled
    assert meta.solution_rollouts == grpo.rollout.n_samples
    for key in ("rollout", "learner", "tasks", "model", "trainer"):
        a, b = getattr(grpo, key).model_dump(), getattr(masa, key).model_dump()
        assert a == b, key
    assert grpo.async_.max_staleness == masa.async_.max_staleness
