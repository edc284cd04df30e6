"""MASA with the DAPO variant (configs/masa-dapo-smoke.yaml), without Ray: the planner's
batch entries go through the learner's `build_batch` into `compute_loss`.

The rules checked here:
- clip-higher: one clipped loss over the whole batch, so the wider upper bound applies to the
  solution and the meta samples alike (each half normalised as its own GRPO group);
- dynamic sampling, per GRPO group: a prompt's solution or meta half whose rewards do not vary
  (all advantages 0) leaves the batch; the prompt is filtered only when neither half is left.
  A zero-variance solution group still scores its meta rollouts, so "all solved" and "all
  failed" prompts, the cases gating relies on, keep teaching the pass-rate prediction;
- overlong filtering: a *solution* sample stopped at its max_tokens (finish_reason "length")
  stays in its group's advantage statistics but leaves the loss; meta samples never do.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from peirce.actors.learner import build_batch, loss_config
from peirce.config import TrainConfig, load_config
from peirce.learner.advantages import grpo
from peirce.learner.losses import compute_loss
from peirce.learner.types import LossInputs
from peirce.masa.ids import meta_group_id
from peirce.tasks.base import Task
from peirce.testing import ListFeed
from peirce.trainer.planner import (FILTER_ALL_OVERLONG, Accepted, Filtered, GroupPlanner, PlanConfig, Submit,
                                    read_result)
from peirce.trainer.step_stats import StepStats
from peirce.transport.groups import pack_messages
from peirce.transport.wire import RequestSampling, RolloutSample, ScoredSample

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "masa-dapo-smoke.yaml"
GID = "g00000000"


@pytest.fixture(scope="module")
def cfg() -> TrainConfig:
    # parallel mode: both halves go out at admission, so a test drives one prompt in four calls;
    # overlong filtering on, as with a model that stops by itself (the shipped config's header)
    return load_config(TrainConfig, CONFIG, ["algorithm.meta.switch_step=1000", "algorithm.overlong_filter=true"])


def _task(i: int) -> Task:
    return Task(id=f"t{i:04d}", family="uppercase", level=1, split="train", puzzle={"i": i},
                puzzle_text=f"spell word {i} in capitals", solution_text="X")


def _frames(msgs) -> list:
    return [bytes(memoryview(f)) for f in pack_messages(msgs)]


def _samples(msg, texts, finish=None) -> list[RolloutSample]:
    finish = finish or ["stop"] * len(texts)
    return [RolloutSample(task_id=msg.task.id, family=msg.task.family, level=1, group_id=msg.group_id, sample_index=i,
                          prompt_token_ids=np.arange(4), response_token_ids=np.arange(3 + i),
                          response_logprobs=np.full(3 + i, -1.0, np.float32), policy_version=0, completion=t,
                          finish_reason=f) for i, (t, f) in enumerate(zip(texts, finish))]


def _prediction(pass_rate: int) -> str:
    return "<meta>think</meta>\n" + json.dumps({"notions": [], "pass_rate": pass_rate, "solution_length": 4})


def _prompt(cfg: TrainConfig, correct: list[bool], pass_rates: list[int], finish=None, meta_finish=None,
            dynamic: bool = True):
    """One prompt through the planner: (planner, decisions after its last result)."""
    plan = PlanConfig.from_train_config(cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(
        update={"dynamic_sampling": dynamic})}))
    planner = GroupPlanner(plan)
    sent = {d.gid: d.messages[0] for d in planner.admit(ListFeed([_task(0)])) if isinstance(d, Submit)}
    sol, meta = sent[GID], sent[meta_group_id(GID)]
    samples = _samples(sol, ["YES" if c else "no" for c in correct], finish)
    [reward] = planner.on_rollout_result(GID, read_result(_frames(samples), RolloutSample))
    scored = [ScoredSample(sample=s, reward=float(c), correct=c, format_ok=True)
              for s, c in zip(reward.messages[1:], correct)]
    assert planner.on_reward_result(GID, read_result(_frames(scored), ScoredSample)) == []
    out = planner.on_rollout_result(meta.group_id, read_result(
        _frames(_samples(meta, [_prediction(p) for p in pass_rates], meta_finish)), RolloutSample))
    return planner, out


def _pg_loss_config(cfg: TrainConfig, **over):
    """The run's loss settings, policy-gradient term only (no entropy bonus, no TIS weight)."""
    return dataclasses.replace(loss_config(cfg), entropy_coef=0.0, tis_cap=None, **over)


def _kinds(entry: list[ScoredSample]) -> list[str]:
    return ["meta" if s.sample.group_id.endswith(".meta") else "solution" for s in entry]


def test_the_shipped_config_turns_on_the_dapo_pieces_with_masa(cfg):
    a = cfg.algorithm
    assert a.meta.enabled and a.dynamic_sampling and a.overlong_filter
    # shipped with overlong filtering off: on the random tiny model it would filter every prompt
    assert load_config(TrainConfig, CONFIG).algorithm.overlong_filter is False
    lc = loss_config(cfg)
    assert (lc.policy_loss, lc.clip_low, lc.clip_high, lc.aggregation) == ("ppo_clip", 0.2, 0.28, "token_mean")
    plan = PlanConfig.from_train_config(cfg)
    assert plan.dynamic_sampling and plan.meta is a.meta and plan.n_samples == a.meta.solution_rollouts


def test_clip_higher_applies_to_the_solution_and_the_meta_samples_alike(cfg):
    n, m = cfg.algorithm.meta.solution_rollouts, cfg.algorithm.meta.meta_rollouts
    planner, out = _prompt(cfg, [True, False, True, False], [1, 6])
    assert out == [Accepted(GID)]
    [entry], _ = planner.next_batch(finishing=True)
    assert _kinds(entry) == ["solution"] * n + ["meta"] * m
    batch = build_batch(entry, cfg.algorithm.advantage, pad_token_id=0, overlong_filter=True)
    # each half is its own GRPO group
    rewards = torch.tensor([s.reward for s in entry])
    want = grpo(rewards, torch.tensor([0] * n + [1] * m), batch.response_mask)
    torch.testing.assert_close(batch.advantages, want)
    assert (batch.advantages[n:, 0] != 0).all()  # the meta rewards differ: both halves carry a signal
    # ratio 1.25 on every token: inside 1 + clip_high (0.28), outside a symmetric 1 + 0.2
    grads = {}
    for high in (cfg.algorithm.clip_high, cfg.algorithm.clip_low):
        old = torch.full(batch.response_mask.shape, -1.0)
        lp = (old + np.log(1.25)).requires_grad_()
        loss, _ = compute_loss(_pg_loss_config(cfg, clip_high=high),
                               LossInputs(logprobs=lp, old_logprobs=old, advantages=batch.advantages,
                                          mask=batch.response_mask))
        loss.backward()
        grads[high] = lp.grad.abs().sum(-1)
    positive = batch.advantages[:, 0] > 0
    assert positive[:n].any() and positive[n:].any()
    assert (grads[0.28][positive] > 0).all()  # solution and meta rows: the gradient flows
    assert (grads[0.2][positive] == 0).all()  # clipped, in both halves
    assert (grads[0.2][~positive] > 0).all()  # negative advantages are never clipped at r > 1


def test_dynamic_sampling_keeps_the_meta_group_of_a_zero_variance_solution_group(cfg):
    m = cfg.algorithm.meta.meta_rollouts
    planner, out = _prompt(cfg, [False] * 4, [0, 5])  # all failed; one prediction right, one wrong
    assert out == [Accepted(GID)]
    [entry], _ = planner.next_batch(finishing=True)
    assert _kinds(entry) == ["meta"] * m and len({s.reward for s in entry}) == 2
    # the entry is still the prompt's: caps, step stats, the learner and on_trained take it
    assert planner.solution_caps([entry]) == [cfg.rollout.max_tokens]
    stats = StepStats.from_batch([entry], trained_version=0)
    assert stats.as_record()["samples"] == 0 and stats.meta_record()["meta/samples"] == m
    batch = build_batch(entry, cfg.algorithm.advantage, pad_token_id=0, overlong_filter=True)
    assert (batch.advantages[:, 0] != 0).all()
    planner.on_trained([entry], policy_version=1)
    assert GID not in planner.groups and planner.gating.open == 1  # the zero-variance truth was recorded


def test_dynamic_sampling_drops_a_zero_variance_meta_group_and_keeps_the_solutions(cfg):
    n = cfg.algorithm.meta.solution_rollouts
    planner, out = _prompt(cfg, [True, False, False, False], [2, 2])  # identical predictions, identical rewards
    assert out == [Accepted(GID)]
    [entry], _ = planner.next_batch(finishing=True)
    assert _kinds(entry) == ["solution"] * n


def test_dynamic_sampling_filters_a_prompt_when_neither_group_varies(cfg):
    planner, out = _prompt(cfg, [True] * 4, [8, 8])
    assert out == [Filtered(GID, _task(0).id)] and GID not in planner.groups
    assert planner.dropped_groups == 1
    assert planner.gating.precision == 1.0  # agreed on K, all solved: the gate was measured before it left


def test_without_dynamic_sampling_both_zero_variance_halves_train(cfg):
    n, m = cfg.algorithm.meta.solution_rollouts, cfg.algorithm.meta.meta_rollouts
    planner, out = _prompt(cfg, [True] * 4, [8, 8], dynamic=False)
    assert out == [Accepted(GID)]
    [entry], _ = planner.next_batch(finishing=True)
    assert _kinds(entry) == ["solution"] * n + ["meta"] * m


def test_overlong_filter_masks_truncated_solutions_not_meta_samples(cfg):
    n = cfg.algorithm.meta.solution_rollouts
    finish = ["stop", "length", "stop", "length"]
    planner, out = _prompt(cfg, [True, False, False, True], [1, 6], finish=finish, meta_finish=["length", "stop"])
    assert out == [Accepted(GID)]
    [entry], _ = planner.next_batch(finishing=True)
    assert StepStats.from_batch([entry], trained_version=0).as_record()["truncated_samples"] == 2
    plain = build_batch(entry, cfg.algorithm.advantage, pad_token_id=0)
    masked = build_batch(entry, cfg.algorithm.advantage, pad_token_id=0, overlong_filter=True)
    rows = masked.response_mask.sum(-1) > 0
    assert rows.tolist() == [True, False, True, False, True, True]  # the truncated meta sample (row 4) stays
    torch.testing.assert_close(plain.response_mask[rows], masked.response_mask[rows])
    assert masked.num_loss_tokens < masked.num_response_tokens == plain.num_loss_tokens
    assert masked.num_loss_rows == 4
    # the truncated samples still count in their group's statistics ...
    torch.testing.assert_close(masked.advantages[rows], plain.advantages[rows])
    assert masked.advantages[~rows].abs().sum() == 0
    # ... and the loss is the loss of the kept rows alone
    keep = rows.nonzero().flatten().tolist()

    def loss_of(batch):
        lp = batch.response_mask * -0.5
        return compute_loss(_pg_loss_config(cfg), LossInputs(logprobs=lp, old_logprobs=lp * 0 - 1.0,
                                                         advantages=batch.advantages, mask=batch.response_mask))[0]

    torch.testing.assert_close(loss_of(masked), loss_of(plain.select(keep)))
    assert not torch.isclose(loss_of(masked), loss_of(plain))
    assert len(entry) == n + 2  # nothing left the entry: masking is the learner's


def test_overlong_filter_drops_a_solution_group_cut_off_entirely_and_keeps_its_meta(cfg):
    """Every solution truncated: the half would add nothing to the loss, so it leaves the
    entry (no batch reaches the learner with nothing under its loss); the meta half stays."""
    m = cfg.algorithm.meta.meta_rollouts
    planner, out = _prompt(cfg, [True, False, False, False], [1, 6], finish=["length"] * 4)
    assert out == [Accepted(GID)]
    [entry], _ = planner.next_batch(finishing=True)
    assert _kinds(entry) == ["meta"] * m


def test_overlong_filter_filters_a_plain_group_cut_off_entirely_and_says_why():
    plan = PlanConfig(max_staleness=0, prompts_per_step=1, n_samples=2, overlong_filter=True,
                      sampling=RequestSampling(temperature=1.0))
    planner = GroupPlanner(plan)
    [sub] = planner.admit(ListFeed(1))
    msg = sub.messages[0]
    samples = _samples(msg, ["YES", "no"], ["length", "length"])
    planner.on_rollout_result(sub.gid, read_result(_frames(samples), RolloutSample))
    scored = [ScoredSample(sample=s, reward=float(i), correct=bool(i), format_ok=True) for i, s in enumerate(samples)]
    [out] = planner.on_reward_result(sub.gid, read_result(_frames(scored), ScoredSample))
    assert out == Filtered(sub.gid, msg.task.id, FILTER_ALL_OVERLONG) and planner.dropped_groups == 1
