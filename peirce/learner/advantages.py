"""Outcome-reward advantage estimators, registered by name.

Every estimator is a pure function with one signature::

    fn(rewards [B], group_ids [B], response_mask [B, T], **options) -> advantages [B, T]

`rewards` holds one scalar per sequence (outcome reward), `group_ids` marks the samples
drawn for the same prompt (any integers; they need not be contiguous or sorted), and the
result is zero on every masked (padding) token. Estimators never produce NaN: a group of
size 1 has no relative signal and gets advantage 0; a batch whose response tokens all
share one return whitens to 0.

Look estimators up with `get_advantage(name)`; add one with `@register_advantage(name)`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from peirce.registry import Registry, UnknownNameError


class AdvantageFn(Protocol):
    def __call__(
        self, rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor, **options: float | bool
    ) -> torch.Tensor: ...


class UnknownAlgorithmError(UnknownNameError):
    """An advantage estimator or policy loss name that is not registered (a ValueError too)."""


ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator", error=UnknownAlgorithmError)
register_advantage = ADVANTAGES.register  # decorator: make `fn` available as `get_advantage(name)`
get_advantage = ADVANTAGES.get
advantage_names = ADVANTAGES.names


# ---------------------------------------------------------------------------- helpers


def _check(rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor | None) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_ids must have the shape of rewards {tuple(rewards.shape)}, got {tuple(group_ids.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    if response_mask is not None and (response_mask.dim() != 2 or response_mask.shape[0] != rewards.shape[0]):
        raise ValueError(
            f"response_mask must be [B, T] with B={rewards.shape[0]}, got shape {tuple(response_mask.shape)}"
        )
    if not torch.isfinite(rewards).all():
        bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()
        raise ValueError(f"rewards must be finite; non-finite at indices {bad}")


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (group mean, group std, group size), each [B], vectorised with scatter-add.

    std is the unbiased (Bessel-corrected) sample std, as `torch.std` and verl use; it is 0
    for groups of size 1 instead of NaN.
    """
    _check(rewards, group_ids, None)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    r = rewards.to(torch.float64)
    size = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(r))
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, r)
    mean = total / size
    sq = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, (r - mean[inverse]) ** 2)
    var = torch.where(size > 1, sq / (size - 1).clamp_min(1), torch.zeros_like(sq))
    dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    return mean[inverse].to(dtype), var.sqrt()[inverse].to(dtype), size[inverse].to(dtype)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) over the masked entries (verl's `masked_whiten`).

    var is unbiased over the masked tokens; with fewer than two tokens it is 0 (and so is
    every centred value). Masked-out entries come back as 0.
    """
    m = mask.to(torch.float64)
    v = torch.where(mask.bool(), values.to(torch.float64), 0.0)
    count = m.sum()
    mean = v.sum() / count.clamp_min(1)
    centred = torch.where(mask.bool(), v - mean, 0.0)
    var = (centred**2).sum() / (count - 1).clamp_min(1)
    out = centred / torch.sqrt(var + eps)
    return out.to(values.dtype)


def _broadcast(per_seq: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Scalar per sequence -> the same value on each response token, 0 on padding."""
    dtype = per_seq.dtype if per_seq.dtype.is_floating_point else torch.float32
    return torch.where(response_mask.bool(), per_seq.to(dtype).unsqueeze(-1), torch.zeros((), dtype=dtype))


# ---------------------------------------------------------------------------- estimators


@register_advantage("grpo")
@torch.no_grad()
def grpo(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO: A_i = (r_i - mean_g) / (std_g + eps) on every response token of sample i.

    `norm_by_std=False` gives Dr.GRPO (A_i = r_i - mean_g), which removes the bias toward
    groups with low reward variance. GRPO: arXiv 2402.03300; Dr.GRPO: arXiv 2503.20783.
    Shapes: rewards [B], group_ids [B], response_mask [B, T] -> [B, T].
    """
    _check(rewards, group_ids, response_mask)
    mean, std, _ = group_stats(rewards, group_ids)
    adv = rewards - mean
    if norm_by_std:
        adv = adv / (std + eps)
    return _broadcast(adv, response_mask)


@register_advantage("rloo")
@torch.no_grad()
def rloo(rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """RLOO: A_i = r_i - mean of the other samples of the same group.

    Equals n/(n-1) * (r_i - mean_g). A group of size 1 has no other sample to form a
    baseline and gets 0. arXiv 2402.14740. Shapes: [B], [B], [B, T] -> [B, T].
    """
    _check(rewards, group_ids, response_mask)
    mean, _, size = group_stats(rewards, group_ids)
    scale = torch.where(size > 1, size / (size - 1).clamp_min(1), torch.zeros_like(size))
    return _broadcast((rewards - mean) * scale, response_mask)


@register_advantage("reinforce_pp")
@torch.no_grad()
def reinforce_pp(
    rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor, *, eps: float = 1e-8
) -> torch.Tensor:
    """REINFORCE++ as in the MAA released code (verl `reinforce_plus_plus`).

    The discounted return with gamma = 1 of an outcome reward is that reward on every
    response token; the returns are then whitened over *all response tokens of the batch*
    (masked mean and unbiased std), so longer responses weigh more in the statistics.
    `group_ids` is accepted for the common signature and ignored. arXiv 2501.03262.
    Shapes: [B], [B], [B, T] -> [B, T].
    """
    _check(rewards, group_ids, response_mask)
    return masked_whiten(_broadcast(rewards, response_mask), response_mask, eps)


@register_advantage("reinforce_pp_group")
@torch.no_grad()
def reinforce_pp_group(
    rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor, *, eps: float = 1e-8
) -> torch.Tensor:
    """REINFORCE++ with a group baseline (verl `reinforce_plus_plus_baseline`).

    Subtract the group mean reward from each sample's reward, put it on every response
    token, then whiten over all response tokens of the batch. This keeps the batch-level
    scale of REINFORCE++ while removing per-prompt difficulty. The MAA paper's equation
    instead normalises by the group's own mean and std: that is exactly `grpo`.
    Shapes: [B], [B], [B, T] -> [B, T].
    """
    _check(rewards, group_ids, response_mask)
    mean, _, _ = group_stats(rewards, group_ids)
    return masked_whiten(_broadcast(rewards - mean, response_mask), response_mask, eps)


def compute_advantages(
    name: str,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    **options: float | bool,
) -> torch.Tensor:
    """Convenience: `get_advantage(name)(rewards, group_ids, response_mask, **options)`."""
    return get_advantage(name)(rewards, group_ids, response_mask, **options)


# ---------------------------------------------------------------------------- filters


@torch.no_grad()
def dynamic_sampling_filter(rewards: torch.Tensor, group_ids: torch.Tensor, *, atol: float = 0.0) -> torch.Tensor:
    """DAPO dynamic sampling: keep mask [B] (bool) that drops zero-variance groups.

    A group whose rewards all agree (max - min <= atol; all solved or all failed) gives
    every member the same relative advantage of 0, so it only dilutes the batch. Groups
    of size 1 are zero-variance by definition and are dropped. arXiv 2503.14476.
    """
    _check(rewards, group_ids, None)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    r = rewards.to(torch.float64)
    hi = torch.full((n_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, r, "amax")
    lo = torch.full((n_groups,), torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, r, "amin")
    return ((hi - lo) > atol)[inverse]
