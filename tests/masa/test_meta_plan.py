"""The per-prompt MASA plan: requests, transitions, groups, resume."""

import json

import pytest

from peirce.masa.config import MetaConfig
from peirce.masa.gating import GatingStats
from peirce.masa.parse import parse_prediction
from peirce.masa.plan import (GateRecord, MetaPlanner, MetaRequest, PlanError, SolutionRequest, decode_state,
                              encode_state)
from peirce.masa.prompt import meta_prompt
from peirce.masa.reward import meta_reward
from peirce.masa.types import Solution

PROBLEM = "Find the remainder when 2^100 is divided by 7."


def meta(rate: int, length: int = 120, notions=("modular arithmetic",)) -> str:
    return "<meta>thinking</meta>\n" + json.dumps({"notions": list(notions), "pass_rate": rate, "solution_length": length})


SOLS = [Solution("modular arithmetic: 2", True, 100), Solution("modular arithmetic: 2", True, 140),
        Solution("guess 4", False, 300), Solution("guess 1", False, 80)]
REWARDS = [1.0, 1.0, 0.0, 0.0]


def sequential(**kw) -> MetaConfig:
    base = dict(enabled=True, mode="sequential", meta_rollouts=4, solution_rollouts=4, gating={"enabled": True})
    return MetaConfig(**(base | kw))


def test_parallel_requests_both_and_finishes_in_either_order():
    cfg = MetaConfig(enabled=True, meta_rollouts=3, solution_rollouts=4, meta_max_tokens=128)
    planner = MetaPlanner(cfg, seed=0, default_max_tokens=512)
    t = planner.start("p1", PROBLEM, step=0)
    assert t.requests == (MetaRequest("p1", meta_prompt(PROBLEM, cfg), 3, 128), SolutionRequest("p1", 4, 512, None))
    responses = [meta(4), meta(0), "no json"]
    for order in ("meta first", "solutions first"):
        s = t.state
        if order == "meta first":
            mid = planner.on_meta(s, responses)
            assert mid.result is None and mid.requests == ()
            done = planner.on_solutions(mid.state, SOLS, REWARDS)
        else:
            mid = planner.on_solutions(s, SOLS, REWARDS)
            assert mid.result is None
            done = planner.on_meta(mid.state, responses)
        res = done.result
        assert done.state.phase == "done" and res is not None
        meta_group, sol_group = res.groups
        assert (meta_group.kind, sol_group.kind) == ("meta", "solution")
        want = [meta_reward(parse_prediction(x), PROBLEM, SOLS, k=8, base=0.01).reward for x in responses]
        assert list(meta_group.rewards) == want and sol_group.rewards == tuple(REWARDS)
        assert want[0] == pytest.approx((1 + 1 + 1) / 3) and want[2] == 0.0
        assert res.gate == GateRecord(gated=False, zero_var=False, enforced=False)  # measured, not enforced
        assert res.expert is None


def test_sequential_gated_prompt_is_skipped_without_groups():
    planner = MetaPlanner(sequential(gating={"enabled": True, "audit_share": 0.0}), seed=0, default_max_tokens=512)
    t = planner.start("p1", PROBLEM, step=0)
    assert [type(r) for r in t.requests] == [MetaRequest]
    t = planner.on_meta(t.state, [meta(0)] * 4)
    assert t.state.phase == "skipped" and t.requests == ()
    assert t.result.groups == () and t.result.gate == GateRecord(gated=True, zero_var=None, enforced=True)
    assert GatingStats().record(t.result.gate.gated, t.result.gate.zero_var).gated == 1
    with pytest.raises(PlanError, match="solution results arrived in phase 'skipped'"):
        planner.on_solutions(t.state, SOLS, REWARDS)


def test_sequential_audited_gated_prompt_is_solved_and_measured():
    planner = MetaPlanner(sequential(gating={"enabled": True, "audit_share": 1.0}), seed=0, default_max_tokens=512)
    t = planner.on_meta(planner.start("p1", PROBLEM, step=0).state, [meta(8)] * 4)
    assert t.state.audited and t.requests == (SolutionRequest("p1", 4, 512, None),)
    done = planner.on_solutions(t.state, SOLS, REWARDS)
    assert done.result.gate == GateRecord(gated=True, zero_var=False, enforced=True)  # predicted all-pass: wrong
    assert len(done.result.groups) == 2


def test_sequential_not_gated_gets_cutoff_and_hint():
    cfg = sequential(cutoff={"enabled": True, "factor": 2.0, "min_tokens": 16}, hint={"enabled": True})
    planner = MetaPlanner(cfg, seed=0, default_max_tokens=1024)
    t = planner.on_meta(planner.start("p1", PROBLEM, step=3).state,
                        [meta(4, 100, ("parity",)), meta(2, 200, ("parity", "Fermat")), "junk", meta(3, None, ())])
    # lengths 100, 200 (the junk and the null length are ignored) -> 2 x 150
    [req] = t.requests
    assert req == SolutionRequest("p1", 4, 300,
                                  "The problem could be solved using the following notions: parity, Fermat.")
    done = planner.on_solutions(t.state, SOLS, REWARDS)
    assert done.result.gate.gated is False and done.result.gate.enforced


def test_switch_step_keeps_early_steps_parallel():
    planner = MetaPlanner(sequential(switch_step=10), seed=0, default_max_tokens=64)
    assert len(planner.start("p", PROBLEM, step=9).requests) == 2
    assert planner.start("p", PROBLEM, step=9).state.mode == "parallel"
    assert len(planner.start("p", PROBLEM, step=10).requests) == 1


def test_resume_in_the_middle_of_sequential_mode():
    cfg = sequential(cutoff={"enabled": True}, hint={"enabled": True}, expert={"enabled": True, "min_score": 0.0})
    planner = MetaPlanner(cfg, seed=3, default_max_tokens=1024)
    t = planner.on_meta(planner.start("p1", PROBLEM, step=7).state, [meta(4), meta(3), meta(5), "x"])
    saved = encode_state(t.state)
    restored = decode_state(saved)
    assert restored == t.state
    fresh = MetaPlanner(cfg, seed=3, default_max_tokens=1024)  # a new process after the restart
    assert fresh.requests(restored) == t.requests  # what to re-issue
    a = planner.on_solutions(t.state, SOLS, REWARDS).result
    b = fresh.on_solutions(restored, SOLS, REWARDS).result
    assert a == b and a.expert is not None and a.expert.step == 7
    assert a.expert.prompt == meta_prompt(PROBLEM, cfg)
    assert a.expert.target.endswith('"pass_rate": 4, "solution_length": 120}')  # 2 of 4 -> 4 of 8; mean(100, 140)


def test_out_of_order_calls_are_clear_errors():
    planner = MetaPlanner(sequential(), seed=0, default_max_tokens=64)
    s = planner.start("p1", PROBLEM, step=0).state
    with pytest.raises(PlanError, match="'p1': solution results arrived in phase 'awaiting_meta'"):
        planner.on_solutions(s, SOLS, REWARDS)
    with pytest.raises(PlanError, match="no meta responses"):
        planner.on_meta(s, [])
    s2 = planner.on_meta(s, [meta(4)] * 4).state
    with pytest.raises(PlanError, match="meta results arrived in phase 'awaiting_solutions'"):
        planner.on_meta(s2, [meta(4)])
    with pytest.raises(PlanError, match="got 4 solutions and 3 rewards"):
        planner.on_solutions(s2, SOLS, REWARDS[:3])
    with pytest.raises(ValueError, match="default_max_tokens"):
        MetaPlanner(sequential(), seed=0, default_max_tokens=0)
    with pytest.raises(Exception, match="phase"):
        decode_state(encode_state(s).replace(b'"awaiting_meta"', b'"flying"'))
