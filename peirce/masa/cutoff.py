"""Length cutoff (sequential mode): cap a prompt's solution requests near the predicted length,
trimming the long generation tails that dominate a rollout batch's wall time."""

from __future__ import annotations

from collections.abc import Sequence

from peirce.masa.config import CutoffConfig

_BIG = 10**18  # far above any token limit: capping there changes no clamped result


def solution_max_tokens(lengths: Sequence[int | None], cfg: CutoffConfig, default_max: int) -> int:
    """clamp(round(factor x mean predicted length), min_tokens, max_tokens).

    `lengths` are the M predicted solution lengths (None = invalid, ignored); with none
    valid, the max. The max is `cfg.max_tokens`, never above `default_max` (the run's
    rollout.max_tokens, what the engine has room for), which is also the max when it is
    null. With the cutoff off, `default_max`. Rounding is half up; min_tokens never
    exceeds the max.
    """
    if default_max < 1:
        raise ValueError(f"default_max (rollout.max_tokens) must be >= 1, got {default_max}")
    if not cfg.enabled:
        return default_max
    hi = default_max if cfg.max_tokens is None else min(cfg.max_tokens, default_max)
    valid = [min(n, _BIG) for n in lengths if n is not None]  # a 400-digit int must not overflow the mean
    if not valid:
        return hi
    lo = min(cfg.min_tokens, hi)
    mean = sum(valid) / len(valid)
    return max(lo, min(hi, int(cfg.factor * mean + 0.5)))
