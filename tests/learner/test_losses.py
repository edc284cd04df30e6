"""Policy losses: against a naive per-token loop (values and gradients), hand-computed clip
cases, aggregation modes, KL sign, TIS, masking, config validation."""

from __future__ import annotations

import math
import random

import pytest
import torch

from peirce.learner.advantages import UnknownAlgorithmError
from peirce.learner.losses import (
    AGGREGATIONS,
    LossConfig,
    aggregate,
    compute_loss,
    get_policy_loss,
    policy_loss_names,
    sft_nll_loss,
)
from peirce.learner.types import LossInputs

# ---------------------------------------------------------------- naive reference


def naive_agg(vals: list[list], mask: list[list[int]], mode: str):
    """vals: nested list of torch scalars (or floats); returns a scalar."""
    rows = [[v for v, m in zip(vr, mr) if m] for vr, mr in zip(vals, mask)]
    rows = [r for r in rows if r]
    if not rows:
        return 0.0
    if mode == "token_mean":
        toks = [v for r in rows for v in r]
        return sum(toks) / len(toks)
    if mode == "seq_mean_token_sum":
        return sum(sum(r) for r in rows) / len(rows)
    return sum(sum(r) / len(r) for r in rows) / len(rows)


def naive_loss(cfg: LossConfig, lp, old, adv, mask, ref=None, roll=None, ent=None):
    B, T = lp.shape
    pg, kl, en = [], [], []
    for i in range(B):
        pg_row, kl_row, en_row = [], [], []
        for t in range(T):
            if not mask[i][t]:
                pg_row.append(0.0), kl_row.append(0.0), en_row.append(0.0)
                continue
            ratio = torch.exp(lp[i, t] - old[i][t])
            a = adv[i][t]
            lo, hi = 1 - cfg.clip_low, 1 + cfg.clip_high
            clipped_ratio = torch.clamp(ratio, lo, hi)
            if cfg.policy_loss == "ppo_clip":
                loss_t = torch.maximum(-a * ratio, -a * clipped_ratio)
            else:
                loss_t = -a * ratio
            if cfg.tis_cap is not None:
                loss_t = loss_t * min(math.exp(old[i][t] - roll[i][t]), cfg.tis_cap)
            pg_row.append(loss_t)
            if ref is not None:
                d = lp[i, t] - ref[i][t]
                k = {"k1": d, "k2": 0.5 * d * d, "k3": torch.exp(-d) - 1 + d}[cfg.kl_estimator]
                kl_row.append(k)
            if ent is not None:
                en_row.append(ent[i][t])
        pg.append(pg_row), kl.append(kl_row), en.append(en_row)
    loss = naive_agg(pg, mask, cfg.aggregation)
    if ref is not None and cfg.kl_coef:
        loss = loss + cfg.kl_coef * naive_agg(kl, mask, cfg.aggregation)
    if ent is not None and cfg.entropy_coef:
        loss = loss - cfg.entropy_coef * naive_agg(en, mask, cfg.aggregation)
    return loss


def _random_inputs(seed: int, B: int = 4, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = lp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    ref = lp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    roll = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.5
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    ent = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T  # at least one token
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)
    return lp, old, ref, roll, adv, ent, mask


def _random_cfg(seed: int) -> LossConfig:
    rng = random.Random(seed)
    return LossConfig(
        policy_loss=rng.choice(policy_loss_names()),
        clip_low=rng.choice([0.1, 0.2]),
        clip_high=rng.choice([0.2, 0.28]),
        aggregation=rng.choice(AGGREGATIONS),
        kl_coef=rng.choice([0.0, 0.001, 0.5]),
        kl_estimator=rng.choice(["k1", "k2", "k3"]),
        entropy_coef=rng.choice([0.0, 0.001, 0.3]),
        tis_cap=rng.choice([None, 2.0, 1.2]),
    )


@pytest.mark.parametrize("seed", range(30))
def test_matches_naive_loop_value_and_gradient(seed):
    cfg = _random_cfg(seed)
    lp, old, ref, roll, adv, ent, mask = _random_inputs(seed)
    lp_a = lp.clone().requires_grad_(True)
    loss, metrics = compute_loss(
        cfg,
        LossInputs(lp_a, old, adv, mask, ref_logprobs=ref, rollout_logprobs=roll, entropy=ent),
    )
    loss.backward()
    lp_b = lp.clone().requires_grad_(True)
    m = mask.int().tolist()
    want = naive_loss(cfg, lp_b, old.tolist(), adv.tolist(), m, ref.tolist(), roll.tolist(), ent.tolist())
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-12)
    assert torch.allclose(lp_a.grad, lp_b.grad, rtol=1e-9, atol=1e-12)
    assert set(metrics) >= {"actor/pg_loss", "actor/kl", "actor/entropy", "actor/clip_frac", "actor/ratio_mean"}
    assert ("actor/tis_mean" in metrics) == (cfg.tis_cap is not None)


# ---------------------------------------------------------------- hand-computed clip cases


def _one_token(ratio: float, adv: float, cfg: LossConfig):
    lp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, metrics = compute_loss(cfg, LossInputs(lp, old, torch.tensor([[adv]], dtype=torch.float64), torch.ones(1, 1)))
    loss.backward()
    return loss.item(), lp.grad.item(), metrics["actor/clip_frac"]


@pytest.mark.parametrize(
    "ratio, adv, loss, grad, clipped",
    [
        (1.5, 1.0, -1.2, 0.0, 1.0),  # positive advantage, above 1+eps: clipped, no gradient
        (0.5, 1.0, -0.5, -0.5, 0.0),  # positive advantage, below 1-eps: free to increase
        (1.5, -1.0, 1.5, 1.5, 0.0),  # negative advantage, above 1+eps: free to decrease
        (0.5, -1.0, 0.8, 0.0, 1.0),  # negative advantage, below 1-eps: clipped
        (1.1, 1.0, -1.1, -1.1, 0.0),  # inside the trust region
    ],
)
def test_ppo_clip_hand_computed(ratio, adv, loss, grad, clipped):
    got_loss, got_grad, got_clip = _one_token(ratio, adv, LossConfig())
    assert got_loss == pytest.approx(loss)
    assert got_grad == pytest.approx(grad)
    assert got_clip == clipped


def test_clip_higher_is_asymmetric():
    sym, hi = LossConfig(), LossConfig(clip_low=0.2, clip_high=0.28)
    assert _one_token(1.25, 1.0, sym)[:2] == pytest.approx((-1.2, 0.0))
    assert _one_token(1.25, 1.0, hi)[:2] == pytest.approx((-1.25, -1.25))  # room above 1.2 up to 1.28
    assert _one_token(1.35, 1.0, hi)[:2] == pytest.approx((-1.28, 0.0))
    # the lower bound is untouched by clip_high
    assert _one_token(0.75, -1.0, sym)[:2] == pytest.approx((0.8, 0.0))
    assert _one_token(0.75, -1.0, hi)[:2] == pytest.approx((0.8, 0.0))


# ---------------------------------------------------------------- aggregation, masking


def test_aggregation_modes_hand_computed():
    vals = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert aggregate(vals, mask, "token_mean").item() == pytest.approx(10 / 4)
    assert aggregate(vals, mask, "seq_mean_token_sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate(vals, mask, "seq_mean_token_mean").item() == pytest.approx((2 + 4) / 2)
    for mode in AGGREGATIONS:
        assert aggregate(vals, torch.zeros(3, 3), mode).item() == 0.0
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(vals, mask, "sum")


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_masked_tokens_contribute_nothing(mode):
    lp, old, ref, roll, adv, ent, mask = _random_inputs(3)
    cfg = LossConfig(aggregation=mode, kl_coef=0.1, entropy_coef=0.01, tis_cap=2.0)
    pad = mask == 0
    assert pad.any()

    def run(fill: float):
        lp_x = torch.where(pad, fill, lp).requires_grad_(True)
        garbage = lambda t: torch.where(pad, fill, t)  # noqa: E731
        loss, _ = compute_loss(
            cfg,
            LossInputs(
                lp_x, garbage(old), garbage(adv), mask,
                ref_logprobs=garbage(ref), rollout_logprobs=garbage(roll), entropy=garbage(ent),
            ),
        )
        loss.backward()
        return loss.item(), lp_x.grad

    base_loss, base_grad = run(0.0)
    for fill in (1e6, -1e6, float("nan"), float("inf")):
        loss, grad = run(fill)
        assert loss == pytest.approx(base_loss, rel=1e-12)
        assert torch.all(grad[pad] == 0)
        assert torch.equal(grad, base_grad)


# ---------------------------------------------------------------- KL, entropy, TIS


@pytest.mark.parametrize("est", ["k2", "k3"])  # k1's per-token gradient is always +1 (zero in expectation)
def test_kl_gradient_pulls_logprob_toward_reference(est):
    cfg = LossConfig(kl_coef=1.0, kl_estimator=est)
    for lp0, ref in ((-0.5, -2.0), (-3.0, -1.0)):  # policy above / below the reference
        lp = torch.tensor([[lp0]], dtype=torch.float64, requires_grad=True)
        zeros = torch.zeros(1, 1, dtype=torch.float64)
        loss, m = compute_loss(cfg, LossInputs(lp, lp.detach(), zeros, torch.ones(1, 1), ref_logprobs=torch.tensor([[ref]])))
        loss.backward()
        # gradient descent moves lp opposite to grad: toward ref
        assert math.copysign(1, -lp.grad.item()) == math.copysign(1, ref - lp0)


@pytest.mark.parametrize("est", ["k2", "k3"])
def test_kl_penalty_reduces_true_kl_of_a_categorical_policy(est):
    """Sampled tokens from pi, KL penalty only: SGD lowers KL(pi || ref) (it would rise if subtracted)."""
    torch.manual_seed(0)
    ref_logp = torch.log_softmax(torch.tensor([2.0, 0.0, -1.0, 0.5, -2.0]), -1)
    theta = torch.tensor([-1.0, 2.0, 0.0, -0.5, 1.0], requires_grad=True)
    opt = torch.optim.SGD([theta], lr=0.5)

    def true_kl() -> float:
        logp = torch.log_softmax(theta.detach(), -1)
        return float((logp.exp() * (logp - ref_logp)).sum())

    kl0 = true_kl()
    for _ in range(30):
        logp = torch.log_softmax(theta, -1)
        tokens = torch.multinomial(logp.detach().exp(), 512, replacement=True).view(8, 64)
        lp = logp[tokens]
        inputs = LossInputs(lp, lp.detach(), torch.zeros_like(lp), torch.ones_like(lp), ref_logprobs=ref_logp[tokens])
        loss, _ = compute_loss(LossConfig(kl_coef=1.0, kl_estimator=est), inputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert true_kl() < 0.25 * kl0


def test_entropy_bonus_sign():
    lp = torch.zeros(1, 2, requires_grad=True)
    ent = torch.tensor([[0.7, 0.3]], requires_grad=True)
    loss, m = compute_loss(LossConfig(entropy_coef=0.5), LossInputs(lp, lp.detach(), torch.zeros(1, 2), torch.ones(1, 2), entropy=ent))
    loss.backward()
    assert loss.item() == pytest.approx(-0.5 * 0.5)
    assert ent.grad.flatten().tolist() == pytest.approx([-0.25, -0.25])  # maximising entropy
    assert m["actor/entropy"] == pytest.approx(0.5)


def test_tis_weight_is_truncated_and_scales_pg_only():
    lp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 2, dtype=torch.float64)
    roll = torch.tensor([[-2.0, 0.5]], dtype=torch.float64)  # weights e^2 -> capped 2.0, e^-0.5
    adv = torch.ones(1, 2, dtype=torch.float64)
    loss, m = compute_loss(LossConfig(tis_cap=2.0), LossInputs(lp, old, adv, torch.ones(1, 2), rollout_logprobs=roll))
    loss.backward()
    w = [2.0, math.exp(-0.5)]
    assert loss.item() == pytest.approx(-(w[0] + w[1]) / 2)
    assert lp.grad.flatten().tolist() == pytest.approx([-w[0] / 2, -w[1] / 2])
    assert m["actor/tis_mean"] == pytest.approx(sum(w) / 2)
    assert m["actor/ratio_mean"] == pytest.approx(1.0)


def test_sft_nll_loss():
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-4.0, -9.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert sft_nll_loss(lp, mask).item() == pytest.approx(7 / 3)
    assert sft_nll_loss(lp, mask, "seq_mean_token_mean").item() == pytest.approx((1.5 + 4) / 2)
    sft_nll_loss(lp, mask).backward()
    assert lp.grad.flatten().tolist() == pytest.approx([-1 / 3, -1 / 3, 0, -1 / 3, 0, 0])
    with pytest.raises(ValueError, match="mask"):
        sft_nll_loss(lp, mask[:, :2])


# ---------------------------------------------------------------- registry and validation


def test_registry():
    assert {"ppo_clip", "vanilla_pg"} <= set(policy_loss_names())
    with pytest.raises(UnknownAlgorithmError, match="'gspo'.*ppo_clip"):
        get_policy_loss("gspo")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"policy_loss": "nope"}, "policy_loss"),
        ({"clip_low": 1.0}, "clip_low"),
        ({"clip_low": -0.1}, "clip_low"),
        ({"clip_high": -0.2}, "clip_high"),
        ({"aggregation": "sum"}, "aggregation"),
        ({"kl_estimator": "k4"}, "kl_estimator"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"kl_coef": float("nan")}, "kl_coef"),
        ({"entropy_coef": -0.1}, "entropy_coef"),
        ({"tis_cap": 0.0}, "tis_cap"),
    ],
)
def test_config_errors_name_field_and_value(kwargs, field):
    with pytest.raises(ValueError) as exc:
        LossConfig(**kwargs)
    msg = str(exc.value)
    assert f"LossConfig.{field}" in msg and repr(next(iter(kwargs.values()))) in msg


def test_missing_inputs_are_named():
    x = torch.zeros(2, 3)
    base = dict(logprobs=x, old_logprobs=x, advantages=x, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="ref_logprobs"):
        compute_loss(LossConfig(kl_coef=0.1), LossInputs(**base))
    with pytest.raises(ValueError, match="rollout_logprobs"):
        compute_loss(LossConfig(tis_cap=2.0), LossInputs(**base))
    with pytest.raises(ValueError, match="entropy"):
        compute_loss(LossConfig(entropy_coef=0.1), LossInputs(**base))
    with pytest.raises(ValueError, match=r"advantages has shape \(2, 2\)"):
        compute_loss(LossConfig(), LossInputs(**{**base, "advantages": torch.zeros(2, 2)}))


def test_config_is_frozen():
    with pytest.raises(Exception):
        LossConfig().clip_low = 0.3  # type: ignore[misc]
