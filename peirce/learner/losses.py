"""Policy losses, registered by name, plus the shared KL / entropy / TIS / aggregation glue.

A policy loss maps `LossInputs` to a *per-token* loss [B, T] and its own metrics;
`compute_loss` then applies the truncated importance weight, aggregates, and adds

    loss = pg_loss + kl_coef * KL(pi || pi_ref) - entropy_coef * entropy

The KL term is *added* as a penalty, so its gradient pulls the policy toward the
reference (the MAA released code subtracts it, a known sign bug). Every reduction goes
through the response mask, and masked positions are replaced by 0 before any arithmetic,
so padding (even NaN/inf there) contributes neither loss nor gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from peirce.learner.advantages import UnknownAlgorithmError
from peirce.learner.types import LossInputs
from peirce.registry import Registry

Aggregation = Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"]
KLEstimator = Literal["k1", "k2", "k3"]
AGGREGATIONS: tuple[str, ...] = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean")
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
_LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: keeps ratios finite for wildly off-policy tokens

PolicyLossFn = Callable[[LossInputs, "LossConfig"], tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss", error=UnknownAlgorithmError)
# Decorator: `fn(inputs, cfg) -> (per-token loss [B, T], {metric: per-token tensor [B, T]})`;
# metric tensors are token-averaged over the mask by `compute_loss`.
register_policy_loss = POLICY_LOSSES.register
get_policy_loss = POLICY_LOSSES.get
policy_loss_names = POLICY_LOSSES.names


@dataclass(frozen=True)
class LossConfig:
    """Loss settings. Defaults: symmetric PPO clip 0.2, token-mean, no KL, no entropy, no TIS."""

    policy_loss: str = "ppo_clip"
    clip_low: float = 0.2  # ratio lower bound is 1 - clip_low
    clip_high: float = 0.2  # ratio upper bound is 1 + clip_high; 0.28 = DAPO clip-higher
    aggregation: Aggregation = "token_mean"
    kl_coef: float = 0.0  # > 0 needs LossInputs.ref_logprobs
    kl_estimator: KLEstimator = "k3"  # k3 = low-variance, unbiased, non-negative (Schulman)
    entropy_coef: float = 0.0  # > 0 needs LossInputs.entropy
    tis_cap: float | None = None  # C in min(pi_old / mu, C); needs rollout_logprobs; None = off

    def __post_init__(self) -> None:
        if self.policy_loss not in POLICY_LOSSES:
            raise ValueError(
                f"LossConfig.policy_loss={self.policy_loss!r} is not registered; "
                f"valid: {', '.join(policy_loss_names())}"
            )
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"LossConfig.clip_low must be in [0, 1), got {self.clip_low!r}")
        if not self.clip_high >= 0.0:
            raise ValueError(f"LossConfig.clip_high must be >= 0, got {self.clip_high!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"LossConfig.aggregation must be one of {', '.join(AGGREGATIONS)}; got {self.aggregation!r}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"LossConfig.kl_estimator must be one of {', '.join(KL_ESTIMATORS)}; got {self.kl_estimator!r}"
            )
        if not self.kl_coef >= 0.0:
            raise ValueError(f"LossConfig.kl_coef must be >= 0, got {self.kl_coef!r}")
        if not self.entropy_coef >= 0.0:
            raise ValueError(f"LossConfig.entropy_coef must be >= 0, got {self.entropy_coef!r}")
        if self.tis_cap is not None and not self.tis_cap > 0.0:
            raise ValueError(f"LossConfig.tis_cap must be > 0 or None, got {self.tis_cap!r}")


# ---------------------------------------------------------------------------- reductions


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce a per-token tensor [B, T] to a scalar over the mask.

    token_mean: sum over all tokens / number of tokens (DAPO; long answers weigh more).
    seq_mean_token_sum: mean over sequences of each sequence's token sum (Dr.GRPO style).
    seq_mean_token_mean: mean over sequences of each sequence's token mean (original GRPO).
    Sequence means run over sequences with at least one token; an empty mask gives 0.
    """
    m = mask.bool()
    v = torch.where(m, values, torch.zeros((), dtype=values.dtype))
    if mode == "token_mean":
        return v.sum() / m.sum().clamp_min(1)
    lengths = m.sum(-1)
    if mode == "seq_mean_token_sum":
        per_seq = v.sum(-1)
    elif mode == "seq_mean_token_mean":
        per_seq = v.sum(-1) / lengths.clamp_min(1)
    else:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {mode!r}")
    return per_seq.sum() / (lengths > 0).sum().clamp_min(1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return aggregate(values, mask, "token_mean")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (http://joschu.net/blog/kl-approx.html).

    With d = log pi - log pi_ref: k1 = d (unbiased, high variance, can be negative);
    k2 = d^2 / 2 (biased, low variance); k3 = exp(-d) - 1 + d (unbiased, >= 0, low variance).
    """
    d = (logprobs - ref_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}; got {estimator!r}")


# ---------------------------------------------------------------------------- policy losses


def _log_ratio(inputs: LossInputs) -> torch.Tensor:
    return (inputs.logprobs - inputs.old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)


@register_policy_loss("ppo_clip")
def ppo_clip(inputs: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, per token: max(-r A, -clip(r, 1 - clip_low, 1 + clip_high) A).

    r = pi_theta / pi_old. clip_high > clip_low is DAPO's clip-higher (arXiv 2503.14476),
    which lets low-probability tokens with positive advantage grow further. PPO: arXiv
    1707.06347. `clip_frac` marks tokens where the clipped branch is active (no gradient).
    """
    ratio = torch.exp(_log_ratio(inputs))
    adv = inputs.advantages
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    loss = torch.maximum(unclipped, clipped)
    return loss, {"clip_frac": (clipped > unclipped).to(loss.dtype).detach(), "ratio": ratio.detach()}


@register_policy_loss("vanilla_pg")
def vanilla_pg(inputs: LossInputs, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Unclipped importance-weighted policy gradient, per token: -r A.

    At r = 1 (fully on-policy, one update per batch) its gradient is REINFORCE's
    -A grad log pi; with several updates per batch prefer `ppo_clip`.
    """
    ratio = torch.exp(_log_ratio(inputs))
    loss = -inputs.advantages * ratio
    return loss, {"clip_frac": torch.zeros_like(loss).detach(), "ratio": ratio.detach()}


# ---------------------------------------------------------------------------- entry points


def _check_inputs(cfg: LossConfig, inputs: LossInputs) -> None:
    shape = tuple(inputs.logprobs.shape)
    if len(shape) != 2:
        raise ValueError(f"LossInputs.logprobs must be [B, T], got shape {shape}")
    for name in ("old_logprobs", "advantages", "mask", "ref_logprobs", "rollout_logprobs", "entropy"):
        t = getattr(inputs, name)
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"LossInputs.{name} has shape {tuple(t.shape)}, expected {shape} like logprobs")
    if cfg.kl_coef > 0 and inputs.ref_logprobs is None:
        raise ValueError(f"LossConfig.kl_coef={cfg.kl_coef} needs LossInputs.ref_logprobs, which is None")
    if cfg.entropy_coef > 0 and inputs.entropy is None:
        raise ValueError(f"LossConfig.entropy_coef={cfg.entropy_coef} needs LossInputs.entropy, which is None")
    if cfg.tis_cap is not None and inputs.rollout_logprobs is None:
        raise ValueError(f"LossConfig.tis_cap={cfg.tis_cap} needs LossInputs.rollout_logprobs, which is None")


def _zero_padding(inputs: LossInputs) -> LossInputs:
    """Replace masked positions by 0 in every tensor, so garbage there cannot leak (NaN * 0 = NaN)."""
    m = inputs.mask.bool()

    def clean(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else torch.where(m, t, torch.zeros((), dtype=t.dtype))

    return LossInputs(
        logprobs=clean(inputs.logprobs),
        old_logprobs=clean(inputs.old_logprobs),
        advantages=clean(inputs.advantages),
        mask=m,
        ref_logprobs=clean(inputs.ref_logprobs),
        rollout_logprobs=clean(inputs.rollout_logprobs),
        entropy=clean(inputs.entropy),
    )


def compute_loss(cfg: LossConfig, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Total scalar loss and metrics.

    Metrics (token means over the mask): `actor/pg_loss` (aggregated as the loss is),
    `actor/clip_frac`, `actor/ratio_mean` always; `actor/kl` when ref_logprobs is given
    (even with kl_coef = 0, for monitoring); `actor/entropy` when entropy is given;
    `actor/tis_mean` when TIS is on. The TIS weight min(exp(old - rollout), cap) is a
    constant that multiplies the per-token policy-gradient loss only, correcting for the
    rollout engine's sampling policy differing from the learner's pi_old.
    """
    _check_inputs(cfg, inputs)
    x = _zero_padding(inputs)
    mask, mode = x.mask, cfg.aggregation
    per_token, extra = get_policy_loss(cfg.policy_loss)(x, cfg)
    metrics: dict[str, float] = {}
    if cfg.tis_cap is not None:
        assert x.rollout_logprobs is not None
        w = torch.exp((x.old_logprobs - x.rollout_logprobs).clamp(max=_LOG_RATIO_CLAMP)).clamp(max=cfg.tis_cap)
        per_token = per_token * w.detach()
        metrics["actor/tis_mean"] = masked_mean(w.detach(), mask).item()
    pg_loss = aggregate(per_token, mask, mode)
    loss = pg_loss
    metrics["actor/pg_loss"] = pg_loss.detach().item()
    metrics["actor/clip_frac"] = masked_mean(extra["clip_frac"], mask).item()
    metrics["actor/ratio_mean"] = masked_mean(extra["ratio"], mask).item()
    if x.ref_logprobs is not None:
        kl = aggregate(kl_penalty(x.logprobs, x.ref_logprobs, cfg.kl_estimator), mask, mode)
        metrics["actor/kl"] = kl.detach().item()
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * kl
    if x.entropy is not None:
        ent = aggregate(x.entropy, mask, mode)
        metrics["actor/entropy"] = ent.detach().item()
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * ent
    return loss, metrics


def sft_nll_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, aggregation: str = "token_mean"
) -> torch.Tensor:
    """Token negative log-likelihood for behaviour cloning (MASA expert meta-trajectories).

    logprobs [B, T] are log pi_theta of the target tokens; padding is ignored.
    """
    if logprobs.shape != mask.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(logprobs.shape)} like logprobs")
    m = mask.bool()
    return aggregate(-torch.where(m, logprobs, torch.zeros((), dtype=logprobs.dtype)), m, aggregation)
