"""benchmarks/bench_async.py's long-tailed lengths and their injection into a real GroupPlanner
(no Ray: the curriculum is a list, the one stand-in, as in tests/trainer/test_planner.py)."""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_async import LENGTHS, LongTailAdmission, long_tail_lengths  # noqa: E402

from peirce.testing import ListFeed  # noqa: E402
from peirce.trainer.planner import Delivered, GroupPlanner, PlanConfig, Submit  # noqa: E402
from peirce.transport.wire import RequestSampling, RolloutSample  # noqa: E402


def test_lengths_are_long_tailed_clipped_and_seeded():
    draws = list(itertools.islice(long_tail_lengths(0, **LENGTHS), 4000))
    assert min(draws) >= LENGTHS["lo"] and max(draws) <= LENGTHS["hi"]
    assert max(draws) == LENGTHS["hi"]  # the tail reaches the limit (p99 of the lognormal is ~245)
    assert abs(statistics.median(draws) - LENGTHS["median"]) <= 2
    p90 = sorted(draws)[int(0.9 * len(draws))]
    assert p90 >= 3 * statistics.median(draws)  # exp(1.28 * sigma) ~ 3.6: a constant length would give 1
    assert draws[:50] == list(itertools.islice(long_tail_lengths(0, **LENGTHS), 50))
    assert draws[:50] != list(itertools.islice(long_tail_lengths(1, **LENGTHS), 50))


@pytest.mark.parametrize("bad", [{"median": 0}, {"sigma": -1}, {"lo": 0}, {"lo": 10, "hi": 9}])
def test_bad_length_parameters_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        next(long_tail_lengths(0, **{**LENGTHS, **bad}))


def test_each_admitted_group_gets_its_drawn_max_tokens_and_the_planner_keeps_it():
    base = RequestSampling(temperature=0.7, top_k=20, max_tokens=224)
    planner = GroupPlanner(PlanConfig(max_staleness=1, prompts_per_step=2, n_samples=2, sampling=base))
    admission = LongTailAdmission(planner, iter([5, 200, 17, 9]))
    planner.admit = admission
    submits = planner.admit(ListFeed(10))
    assert len(submits) == 4 and all(isinstance(s, Submit) and s.queue == "rollout" for s in submits)
    assert [s.messages[0].sampling.max_tokens for s in submits] == [5, 200, 17, 9] == admission.drawn
    for s in submits:
        msg = s.messages[0]
        assert planner.groups[s.gid].msg is msg  # a re-dispatch after a worker loss keeps the length
        assert (msg.sampling.temperature, msg.sampling.top_k) == (0.7, 20)
    # the planner still accepts the samples of a rewritten message
    msg = submits[0].messages[0]
    samples = [RolloutSample(task_id=msg.task.id, family=msg.task.family, level=1, group_id=msg.group_id,
                             sample_index=i, prompt_token_ids=np.arange(3), response_token_ids=np.arange(5),
                             response_logprobs=np.zeros(5, np.float32), policy_version=0) for i in range(2)]
    decisions = planner.on_rollout_result(msg.group_id, Delivered(samples))
    assert [d.queue for d in decisions] == ["reward"]


def test_overlap_bound_is_the_sync_step_over_the_busier_roles_busy_time():
    from bench_async import busier_role, overlap_bound

    # learner busy 60%, rollout 37%: perfect overlap shrinks the step to the learner's 60%
    assert overlap_bound({"learner_idle_ratio_median": 0.40, "rollout_idle_ratio_median": 0.63}) == 1.667
    # equal halves: the two-equal-resources limit, 2x
    assert overlap_bound({"learner_idle_ratio_median": 0.5, "rollout_idle_ratio_median": 0.5}) == 2.0
    # whichever role is busier sets it, and is named
    assert overlap_bound({"learner_idle_ratio_median": 0.8, "rollout_idle_ratio_median": 0.2}) == 1.25
    assert busier_role({"learner_idle_ratio_median": 0.8, "rollout_idle_ratio_median": 0.2}) == "rollout"
    assert busier_role({"learner_idle_ratio_median": 0.40, "rollout_idle_ratio_median": 0.63}) == "learner"


@pytest.mark.parametrize("engine, expected", [(None, True), (True, True), (False, False)])
def test_every_engine_choice_builds_a_valid_run_config(tmp_path, engine, expected):
    """`--engine auto` (None) once passed the string 'None' as an override and the run died at
    config load; each choice must validate, with the engine placement it names (CPU here)."""
    from bench_async import run_config

    cfg = run_config(2, 10, 0, tmp_path, partial=True, n_samples=2, engine_in_process=engine)
    assert cfg.rollout.engine_in_process is engine and cfg.rollout.engine_in_process_resolved is expected
    assert cfg.async_.max_staleness == 2 and cfg.rollout.n_samples == 2 and cfg.rollout.interrupt_on_new_weights


def test_variants_cover_each_async_mode_against_one_synchronous_baseline_per_workload(tmp_path):
    from bench_async import VARIANTS, WORKLOADS, run_config

    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names))
    for workload in WORKLOADS:
        mine = [v for v in VARIANTS if v.workload == workload]
        assert mine[0].staleness == 0 and not (mine[0].partial or mine[0].continuous)  # the baseline runs first
        assert {(v.partial, v.continuous) for v in mine[1:]} == {(p, c) for p in (False, True) for c in (False, True)}
    cfg = run_config(2, 10, 0, tmp_path, n_samples=2, continuous=True)
    assert cfg.rollout.continuous and not cfg.rollout.interrupt_on_new_weights


@pytest.mark.parametrize("name", ["default", "balanced", "stragglers"])
def test_each_workload_builds_a_run_whose_limit_admits_its_longest_draw(tmp_path, name):
    """A workload's tail must fit the run's `rollout.max_tokens`, or the engine would clip the
    stragglers the workload exists to measure."""
    from bench_async import WORKLOADS, run_config

    workload = WORKLOADS[name]
    lengths = workload.lengths
    draws = list(itertools.islice(long_tail_lengths(0, **lengths), 2000))
    cfg = run_config(2, 10, 0, tmp_path, n_samples=workload.samples, max_tokens=int(lengths["hi"]))
    assert max(draws) <= cfg.rollout.max_tokens == lengths["hi"] and cfg.rollout.n_samples == workload.samples


def test_the_stragglers_workload_has_the_heaviest_tail():
    from bench_async import WORKLOADS

    p99 = {name: sorted(itertools.islice(long_tail_lengths(0, **w.lengths), 4000))[3960]
           for name, w in WORKLOADS.items()}
    assert p99["stragglers"] > 1.5 * p99["default"] and WORKLOADS["stragglers"].samples < WORKLOADS["balanced"].samples


def test_only_selects_by_regular_expression_each_after_its_synchronous_baseline():
    from bench_async import selected

    names = [v.name for v in selected("balanced_staleness2$")]
    assert names == ["trained_samples_per_s_balanced_staleness0", "trained_samples_per_s_balanced_staleness2"]
    by_workload = selected("stragglers")
    assert {v.workload for v in by_workload} == {"stragglers"} and len(by_workload) == 5
    assert by_workload[0].staleness == 0
    assert selected("no-such-variant") == []
    assert len(selected("")) == len(__import__("bench_async").VARIANTS)
