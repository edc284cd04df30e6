"""The planner's MASA meta phase without Ray: parallel and sequential prompts, gating with
and without audit, the cutoff's max_tokens on the solution request, the notion hint, a
failed half retrying the whole prompt, and a resume in the middle of a sequence.

Results go through the workers' bytes (`pack_messages`) and the driver's decode
(`read_result`), as in tests/trainer/test_planner.py; the curriculum is a list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from peirce.masa.config import MetaConfig
from peirce.masa.ids import meta_group_id
from peirce.masa.parse import parse_prediction
from peirce.masa.prompt import meta_prompt
from peirce.masa.reward import meta_reward
from peirce.masa.types import Solution
from peirce.tasks.base import Task
from peirce.testing import ListFeed
from peirce.seeding import group_seed
from peirce.trainer.planner import (Accepted, Gated, GroupPlanner, Phase, PlanConfig, Retry, Submit, WorkerError,
                                    read_result)
from peirce.trainer.step_stats import StepStats
from peirce.transport.groups import pack_messages
from peirce.transport.wire import RequestSampling, RolloutSample, ScoredSample, TaskMsg

M, G, MAX = 3, 4, 200


def _task(i: int) -> Task:
    return Task(id=f"t{i:04d}", family="uppercase", level=1, split="train", puzzle={"i": i},
                puzzle_text=f"spell word {i} in capitals", solution_text="X")


def _meta(**over) -> MetaConfig:
    base = {"enabled": True, "meta_rollouts": M, "solution_rollouts": G, "k": 4, "meta_max_tokens": 50}
    return MetaConfig.model_validate({**base, **over})


def _planner(meta: MetaConfig, b: int = 1, s: int = 0) -> GroupPlanner:
    return GroupPlanner(PlanConfig(max_staleness=s, prompts_per_step=b, n_samples=G, seed=7, meta=meta,
                                   sampling=RequestSampling(temperature=1.0, max_tokens=MAX)))


def _prediction(pass_rate: int, length: int, notions=("capital letter",)) -> str:
    return "<meta>think</meta>\n" + json.dumps({"notions": list(notions), "pass_rate": pass_rate,
                                               "solution_length": length})


def _rollouts(msg: TaskMsg, texts: list[str], lengths: list[int] | None = None) -> list:
    lengths = lengths or [3] * len(texts)
    samples = [RolloutSample(task_id=msg.task.id, family=msg.task.family, level=1, group_id=msg.group_id,
                             sample_index=i, prompt_token_ids=np.arange(4), response_token_ids=np.arange(n),
                             response_logprobs=np.zeros(n, np.float32), policy_version=msg.policy_version_at_dispatch,
                             completion=t) for i, (t, n) in enumerate(zip(texts, lengths))]
    return [bytes(memoryview(f)) for f in pack_messages(samples)]


def _scored(samples: list[RolloutSample], correct: list[bool]) -> list:
    scored = [ScoredSample(sample=s, reward=1.0 if c else -1.0, correct=c, format_ok=True)
              for s, c in zip(samples, correct)]
    return [bytes(memoryview(f)) for f in pack_messages(scored)]


def _submits(decisions) -> dict[str, TaskMsg]:
    return {d.gid: d.messages[0] for d in decisions if isinstance(d, Submit)}


def _solve(planner: GroupPlanner, gid: str, msg: TaskMsg, correct: list[bool], lengths: list[int]) -> list:
    out = planner.on_rollout_result(gid, read_result(_rollouts(msg, [f"CAPITAL LETTER {i}" if c else "no"
                                                                      for i, c in enumerate(correct)], lengths),
                                                     RolloutSample))
    [reward] = [d for d in out if isinstance(d, Submit) and d.queue == "reward"]
    return planner.on_reward_result(gid, read_result(_scored(list(reward.messages[1:]), correct), ScoredSample))


def test_parallel_sends_both_halves_and_trains_two_groups_in_one_entry():
    meta = _meta()
    planner = _planner(meta)
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    gid = "g00000000"
    assert set(sent) == {gid, meta_group_id(gid)} and planner.groups[gid].phase is Phase.ROLLOUT
    meta_msg, sol_msg = sent[meta_group_id(gid)], sent[gid]
    assert meta_msg.phase == "meta" and meta_msg.prompt == meta_prompt(_task(0).puzzle_text, meta)
    assert (meta_msg.n_samples, meta_msg.sampling.max_tokens, meta_msg.sampling.temperature) == (M, 50, 1.0)
    assert (sol_msg.phase, sol_msg.prompt, sol_msg.n_samples, sol_msg.sampling.max_tokens) == ("solve", None, G, MAX)
    # solutions first: they wait in SCORED for the meta half, not in the ready queue
    correct, lengths = [True, True, False, True], [5, 9, 2, 7]
    assert _solve(planner, gid, sol_msg, correct, lengths) == []
    assert planner.groups[gid].phase is Phase.SCORED and not planner.ready
    texts = [_prediction(3, 6), _prediction(0, 100), "no json at all"]
    out = planner.on_rollout_result(meta_group_id(gid), read_result(_rollouts(meta_msg, texts), RolloutSample))
    assert out == [Accepted(gid)]
    [entry], _ = planner.next_batch(finishing=False)
    assert [s.sample.group_id for s in entry] == [gid] * G + [meta_group_id(gid)] * M
    solutions = [Solution(f"CAPITAL LETTER {i}" if c else "no", c, n) for i, (c, n) in enumerate(zip(correct, lengths))]
    want = [meta_reward(parse_prediction(t, 4), _task(0).puzzle_text, solutions, k=4, base=0.01).reward for t in texts]
    assert [s.reward for s in entry[G:]] == want and want[0] > want[1] > want[2] == 0
    assert entry[G].reward_details["abs_error"] == 0.0 and entry[G + 2].reward_details["abs_error"] is None
    # the step's task numbers see only the solutions; the meta numbers come apart
    stats = StepStats.from_batch([entry], trained_version=0)
    assert stats.rewards == [1.0, 1.0, -1.0, 1.0] and stats.level_rewards == {("uppercase", 1): stats.rewards}
    rec = stats.meta_record()
    assert rec["meta/samples"] == M and rec["meta/reward_mean"] == pytest.approx(sum(want) / M)
    assert rec["meta/calibration_error"] == pytest.approx((0 + 0.75) / 2)  # truth 3/4; predictions 3/4, 0/4
    assert rec["meta/token_share"] == pytest.approx(9 / (9 + sum(lengths)))
    # the gate is measured (not enforced) in parallel mode
    assert (planner.gating.open, planner.gating.gated) == (1, 0)


def test_meta_first_then_solutions_in_the_other_order_too():
    planner = _planner(_meta())
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    gid = "g00000000"
    out = planner.on_rollout_result(meta_group_id(gid), read_result(
        _rollouts(sent[meta_group_id(gid)], [_prediction(2, 5)] * M), RolloutSample))
    assert out == [] and planner.groups[gid].phase is Phase.ROLLOUT
    assert _solve(planner, gid, sent[gid], [True, False, True, False], [4, 4, 6, 6]) == [Accepted(gid)]


def test_sequential_waits_for_predictions_then_caps_and_hints_the_solutions():
    meta = _meta(mode="sequential", cutoff={"enabled": True, "factor": 2.0, "min_tokens": 4},
                 hint={"enabled": True})
    planner = _planner(meta)
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    gid = "g00000000"
    assert set(sent) == {meta_group_id(gid)} and planner.groups[gid].phase is Phase.META
    out = planner.on_rollout_result(meta_group_id(gid), read_result(
        _rollouts(sent[meta_group_id(gid)], [_prediction(2, 10), _prediction(1, 20), _prediction(3, 30)]),
        RolloutSample))
    [sol] = _submits(out).values()
    assert sol.sampling.max_tokens == 40 < MAX  # 2 x mean(10, 20, 30)
    assert sol.prompt == _task(0).puzzle_text + "\n\nThe problem could be solved using the following notions: " \
                                                "capital letter."
    assert planner.groups[gid].phase is Phase.ROLLOUT
    assert _solve(planner, gid, sol, [True, False, False, True], [30, 12, 40, 18]) == [Accepted(gid)]
    batch = planner.next_batch(False)[0]
    assert planner.solution_caps(batch) == [40]
    assert planner.cutoff_savings(batch) == G * (MAX - 40)


def test_switch_step_keeps_the_first_steps_parallel():
    planner = _planner(_meta(mode="sequential", switch_step=1))
    assert len(_submits(planner.admit(ListFeed([_task(0)])))) == 2


def test_a_gated_prompt_leaves_the_book_and_frees_its_admission():
    meta = _meta(mode="sequential", gating={"enabled": True, "audit_share": 0.0})
    planner = _planner(meta, b=1, s=0)
    feed = ListFeed([_task(0), _task(1)])
    sent = _submits(planner.admit(feed))
    assert list(sent) == [meta_group_id("g00000000")]  # one admission under max_staleness 0, batch 1
    out = planner.on_rollout_result(meta_group_id("g00000000"), read_result(
        _rollouts(sent[meta_group_id("g00000000")], [_prediction(4, 10)] * M), RolloutSample))
    assert out == [Gated("g00000000", _task(0).id)] and "g00000000" not in planner.groups
    assert (planner.gating.gated, planner.gating.audited) == (1, 0)
    counters = planner.take_meta_counters()
    assert (counters.gated, counters.saved_by_gating) == (1, G * MAX)
    assert list(_submits(planner.admit(feed))) == [meta_group_id("g00000001")]  # the freed slot is reused


def test_an_audited_gated_prompt_is_solved_and_measures_precision():
    meta = _meta(mode="sequential", gating={"enabled": True, "audit_share": 1.0})
    planner = _planner(meta)
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    gid = "g00000000"
    out = planner.on_rollout_result(meta_group_id(gid), read_result(
        _rollouts(sent[meta_group_id(gid)], [_prediction(0, 10)] * M), RolloutSample))
    [sol] = _submits(out).values()
    assert _solve(planner, gid, sol, [False] * G, [3] * G) == [Accepted(gid)]  # predicted all-fail: right
    assert (planner.gating.gated, planner.gating.audited, planner.gating.precision) == (1, 1, 1.0)
    assert planner.take_meta_counters().audited == 1


def test_a_failed_meta_half_retries_the_whole_prompt():
    planner = _planner(_meta())
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    gid = "g00000000"
    out = planner.on_rollout_result(meta_group_id(gid), WorkerError("unservable"))
    assert isinstance(out[0], Retry) and out[0].old_gid == gid
    again = _submits([out[0].submit, *out[1:]])
    assert set(again) == {"g00000000r1", meta_group_id("g00000000r1")}
    assert all(m.attempt == 1 for m in again.values())
    # a retry samples from the same seeds: a worker's death does not change what is drawn
    assert {m.phase: m.sampling.seed for m in again.values()} == {m.phase: m.sampling.seed for m in sent.values()}
    assert sent[gid].sampling.seed == group_seed(7, _task(0).id, "solve") != sent[meta_group_id(gid)].sampling.seed
    # the old halves' late results are ignored
    late = planner.on_rollout_result(gid, read_result(_rollouts(sent[gid], ["x"] * G), RolloutSample))
    assert [type(d).__name__ for d in late] == ["Ignored"]


def test_resume_mid_sequence_asks_for_exactly_the_pending_solutions():
    meta = _meta(mode="sequential", cutoff={"enabled": True, "factor": 1.5, "min_tokens": 4},
                 hint={"enabled": True}, expert={"enabled": True, "min_score": 0.0})
    planner = _planner(meta)
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    texts = [_prediction(2, 20), _prediction(2, 40), _prediction(1, 30)]
    [sol] = _submits(planner.on_rollout_result(meta_group_id("g00000000"), read_result(
        _rollouts(sent[meta_group_id("g00000000")], texts), RolloutSample))).values()
    state = json.loads(json.dumps(planner.state_dict()))  # the checkpoint is JSON

    restored = _planner(meta)
    tasks = restored.load_state_dict(state)
    assert [t.id for t in tasks] == ["t0000"]
    [again] = _submits(restored.admit(ListFeed(tasks))).values()  # no meta rollouts again
    assert (again.phase, again.sampling.max_tokens, again.prompt) == ("solve", 45, sol.prompt)
    gid = again.group_id
    assert _solve(restored, gid, again, [True, False, True, True], [10, 50, 30, 44]) == [Accepted(gid)]
    [entry], _ = restored.next_batch(False)
    assert [s.sample.completion for s in entry[G:]] == texts
    assert {s.sample.group_id for s in entry[G:]} == {meta_group_id(gid)}
    assert len(restored.expert) == 1  # the expert example of the resumed prompt


def _checkpoint_mid_sequence(meta: MetaConfig, s: int) -> tuple[dict, list[str]]:
    """A planner at version 0 whose one prompt has its predictions in, checkpointed as JSON."""
    planner = _planner(meta, s=s)
    sent = _submits(planner.admit(ListFeed([_task(0)])))
    texts = [_prediction(2, 20), _prediction(2, 40), _prediction(1, 30)]
    planner.on_rollout_result(meta_group_id("g00000000"), read_result(
        _rollouts(sent[meta_group_id("g00000000")], texts), RolloutSample))
    return json.loads(json.dumps(planner.state_dict())), texts


def test_resumed_meta_samples_older_than_max_staleness_are_made_again():
    meta = _meta(mode="sequential")
    state, _ = _checkpoint_mid_sequence(meta, s=1)
    state["policy_version"] = 2  # the learner moved on: version-0 samples are 2 > max_staleness old
    restored = _planner(meta, s=1)
    tasks = restored.load_state_dict(state)
    [again] = _submits(restored.admit(ListFeed(tasks))).values()
    assert again.phase == "meta" and again.policy_version_at_dispatch == 2
    assert restored.resumed_meta_restarted == 1


def test_resumed_meta_samples_date_their_group_so_the_stale_drop_bounds_them():
    meta = _meta(mode="sequential")
    state, texts = _checkpoint_mid_sequence(meta, s=1)
    state["policy_version"] = 1  # version-0 samples are still within max_staleness 1
    restored = _planner(meta, s=1)
    tasks = restored.load_state_dict(state)
    [again] = _submits(restored.admit(ListFeed(tasks))).values()
    assert again.phase == "solve" and again.policy_version_at_dispatch == 0
    assert restored.resumed_meta_restarted == 0
    gid = again.group_id
    assert _solve(restored, gid, again, [True, False, True, True], [10, 50, 30, 44]) == [Accepted(gid)]
    restored.version = 2  # an SFT step (say) moved the learner past the meta samples' bound
    batch, drops = restored.next_batch(False)
    assert batch == [] and [d.kind for d in drops] == ["stale"]
