"""Advantage estimators: hand-computed cases, and vectorised vs a naive Python loop."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from peirce.learner.advantages import (
    UnknownAlgorithmError,
    advantage_names,
    compute_advantages,
    dynamic_sampling_filter,
    get_advantage,
    grpo,
    reinforce_pp,
    reinforce_pp_group,
    rloo,
)

# ---------------------------------------------------------------- naive references


def _groups(group_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        out.setdefault(g, []).append(i)
    return out


def naive_grpo(r, g, mask, norm_by_std=True, eps=1e-6):
    groups = _groups(g)
    out = []
    for i in range(len(r)):
        vals = [r[j] for j in groups[g[i]]]
        mean = sum(vals) / len(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        a = r[i] - mean
        if norm_by_std:
            a = a / (std + eps)
        out.append([a if m else 0.0 for m in mask[i]])
    return out


def naive_rloo(r, g, mask):
    groups = _groups(g)
    out = []
    for i in range(len(r)):
        others = [r[j] for j in groups[g[i]] if j != i]
        a = r[i] - sum(others) / len(others) if others else 0.0
        out.append([a if m else 0.0 for m in mask[i]])
    return out


def naive_whiten(per_seq, mask, eps=1e-8):
    toks = [per_seq[i] for i in range(len(per_seq)) for m in mask[i] if m]
    mean = sum(toks) / len(toks)
    var = sum((t - mean) ** 2 for t in toks) / (len(toks) - 1) if len(toks) > 1 else 0.0
    return [[(per_seq[i] - mean) / math.sqrt(var + eps) if m else 0.0 for m in mask[i]] for i in range(len(per_seq))]


def naive_rpp_group(r, g, mask):
    groups = _groups(g)
    centred = [r[i] - sum(r[j] for j in groups[g[i]]) / len(groups[g[i]]) for i in range(len(r))]
    return naive_whiten(centred, mask)


def _random_batch(seed: int):
    rng = random.Random(seed)
    n_groups = rng.randint(1, 5)
    g, r = [], []
    for gid in rng.sample(range(100), n_groups):
        for _ in range(rng.randint(1, 5)):
            g.append(gid)
            r.append(rng.choice([-2.0, -1.5, 0.0, 1.0, 3.0, rng.uniform(-3, 3)]))
    order = list(range(len(g)))
    rng.shuffle(order)  # groups interleaved, ids not contiguous
    g = [g[i] for i in order]
    r = [r[i] for i in order]
    T = rng.randint(1, 7)
    mask = [[1 if t < rng.randint(1, T) else 0 for t in range(T)] for _ in g]
    return r, g, mask


def _t(r, g, mask):
    return torch.tensor(r, dtype=torch.float64), torch.tensor(g), torch.tensor(mask, dtype=torch.float64)


# ---------------------------------------------------------------- registry


def test_registry_lists_names_and_rejects_unknown():
    assert {"grpo", "rloo", "reinforce_pp", "reinforce_pp_group"} <= set(advantage_names())
    assert get_advantage("grpo") is grpo
    with pytest.raises(UnknownAlgorithmError) as exc:
        get_advantage("gae")
    assert "'gae'" in str(exc.value) and "grpo" in str(exc.value) and "rloo" in str(exc.value)


# ---------------------------------------------------------------- hand-computed


def test_grpo_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0])
    g = torch.tensor([7, 7, 7, 7, 3])
    mask = torch.tensor([[1, 1, 0]] * 5)
    adv = grpo(r, g, mask)
    # group 7: mean 0.5, unbiased std sqrt(1/3)
    s = math.sqrt(1 / 3)
    expected_first = 0.5 / (s + 1e-6)
    assert adv[0, 0].item() == pytest.approx(expected_first, rel=1e-6)
    assert adv[1, 1].item() == pytest.approx(-expected_first, rel=1e-6)
    assert adv[0, 2].item() == 0.0  # padding
    assert torch.all(adv[4] == 0)  # singleton group: no NaN, no signal
    dr = grpo(r, g, mask, norm_by_std=False)
    assert dr[0, 0].item() == pytest.approx(0.5)
    assert dr[1, 0].item() == pytest.approx(-0.5)


def test_rloo_hand_computed():
    r = torch.tensor([1.0, 2.0, 6.0, 4.0])
    g = torch.tensor([0, 0, 0, 1])
    mask = torch.ones(4, 2)
    adv = rloo(r, g, mask)
    assert adv[:, 0].tolist() == pytest.approx([1 - 4, 2 - 3.5, 6 - 1.5, 0.0])


def test_reinforce_pp_whitens_over_tokens_not_sequences():
    r = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])  # 3 tokens with +1, 1 token with -1
    adv = reinforce_pp(r, torch.tensor([0, 0]), mask)
    toks = [1.0, 1.0, 1.0, -1.0]
    mean = 0.5
    std = math.sqrt(sum((t - mean) ** 2 for t in toks) / 3)
    assert adv[0, 0].item() == pytest.approx((1 - mean) / std, rel=1e-6)
    assert adv[1, 0].item() == pytest.approx((-1 - mean) / std, rel=1e-6)
    assert adv[1, 1:].tolist() == [0.0, 0.0]
    # token-weighted: the masked mean of the output is 0, the sequence mean is not
    assert (adv * mask).sum().item() == pytest.approx(0.0, abs=1e-6)


def test_reinforce_pp_group_removes_prompt_difficulty():
    # Two prompts: one easy (rewards 3, 3), one hard (-2, -2): after the group baseline all
    # returns are 0, so everything whitens to 0; plain REINFORCE++ would favour the easy one.
    r = torch.tensor([3.0, 3.0, -2.0, -2.0])
    g = torch.tensor([0, 0, 1, 1])
    mask = torch.ones(4, 3)
    assert torch.all(reinforce_pp_group(r, g, mask) == 0)
    assert torch.all(reinforce_pp(r, g, mask)[:2] > 0)


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp", "reinforce_pp_group"])
def test_degenerate_inputs_give_no_nan(name):
    fn = get_advantage(name)
    # one sample, one token
    out = fn(torch.tensor([1.0]), torch.tensor([0]), torch.tensor([[1.0]]))
    assert torch.isfinite(out).all() and out.item() == 0.0
    # every sequence fully masked
    out = fn(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), torch.zeros(2, 3))
    assert torch.isfinite(out).all() and torch.all(out == 0)
    # all rewards equal
    out = fn(torch.full((4,), 2.0), torch.tensor([0, 0, 1, 1]), torch.ones(4, 2))
    assert torch.isfinite(out).all() and torch.all(out == 0)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="group_ids"):
        grpo(torch.zeros(3), torch.zeros(2, dtype=torch.long), torch.ones(3, 2))
    with pytest.raises(ValueError, match="response_mask"):
        grpo(torch.zeros(3), torch.zeros(3, dtype=torch.long), torch.ones(2, 2))
    with pytest.raises(ValueError, match="rewards must be finite"):
        grpo(torch.tensor([0.0, float("nan")]), torch.zeros(2, dtype=torch.long), torch.ones(2, 2))
    with pytest.raises(ValueError, match="integer"):
        grpo(torch.zeros(2), torch.zeros(2), torch.ones(2, 2))


# ---------------------------------------------------------------- vectorised vs loop


@pytest.mark.parametrize("seed", range(25))
def test_vectorised_matches_naive_loop(seed):
    r, g, mask = _random_batch(seed)
    rt, gt, mt = _t(r, g, mask)
    cases = {
        "grpo": (compute_advantages("grpo", rt, gt, mt), naive_grpo(r, g, mask)),
        "dr_grpo": (compute_advantages("grpo", rt, gt, mt, norm_by_std=False), naive_grpo(r, g, mask, False)),
        "rloo": (compute_advantages("rloo", rt, gt, mt), naive_rloo(r, g, mask)),
        "reinforce_pp": (compute_advantages("reinforce_pp", rt, gt, mt), naive_whiten(r, mask)),
        "reinforce_pp_group": (compute_advantages("reinforce_pp_group", rt, gt, mt), naive_rpp_group(r, g, mask)),
    }
    for name, (got, want) in cases.items():
        assert got.shape == mt.shape, name
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-9, rtol=1e-7), name


@pytest.mark.parametrize("seed", range(15))
def test_dynamic_sampling_filter_matches_loop(seed):
    r, g, _ = _random_batch(seed)
    # make some groups uniform
    groups = _groups(g)
    for k, (gid, idx) in enumerate(groups.items()):
        if k % 2 == 0:
            for i in idx:
                r[i] = 1.0
    keep = dynamic_sampling_filter(torch.tensor(r), torch.tensor(g))
    want = [max(r[j] for j in groups[gid]) > min(r[j] for j in groups[gid]) for gid in g]
    assert keep.tolist() == want


def test_dynamic_sampling_filter_hand_computed():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 5.0])
    g = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    assert dynamic_sampling_filter(r, g).tolist() == [False, False, True, True, False, False, False]
    assert dynamic_sampling_filter(r, g, atol=2.0).tolist() == [False] * 7
