"""Prediction-based gating (sequential mode): skip a prompt's solution rollouts when its meta
rollouts agree the solution group would have zero variance, i.e. give GRPO no gradient.

Decision: with f_i = pass_rate_i / K over the valid predictions, gate when enough of the M
rollouts are valid (`min_valid_share`), their population std is < sigma, and their mean
is at 0 (<= zero_tolerance: all fail) or at K (>= 1 - full_tolerance: all succeed).

Audit: a gated prompt is still solved with probability `audit_share`, chosen by a hash of
(seed, prompt id) -- deterministic, so a resumed run audits the same prompts, and
independent of the order prompts arrive in. The audited groups are what gating precision
is measured on; `GatingStats` turns the outcomes into precision and recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import msgspec

from peirce.masa.config import GatingConfig
from peirce.seeding import stable_u64


class GateDecision(msgspec.Struct, frozen=True):
    """gated: skip the solutions (before auditing). predicted: what the agreement says."""

    gated: bool
    predicted: Literal["all_fail", "all_pass"] | None
    mean: float | None  # mean predicted pass fraction over valid predictions (None: none valid)
    std: float | None
    valid: int  # meta rollouts with a valid pass_rate


def decide(pass_rates: Sequence[int | None], k: int, cfg: GatingConfig) -> GateDecision:
    """The gating decision for one prompt from its M predicted pass rates (None = invalid)."""
    fractions = [p / k for p in pass_rates if p is not None]
    if not fractions:
        return GateDecision(gated=False, predicted=None, mean=None, std=None, valid=0)
    mean = math.fsum(fractions) / len(fractions)
    std = math.sqrt(math.fsum((f - mean) ** 2 for f in fractions) / len(fractions))
    predicted: Literal["all_fail", "all_pass"] | None = None
    if mean <= cfg.zero_tolerance:
        predicted = "all_fail"
    elif mean >= 1 - cfg.full_tolerance:
        predicted = "all_pass"
    enough = len(fractions) >= cfg.min_valid_share * len(pass_rates)
    gated = enough and std < cfg.sigma and predicted is not None
    return GateDecision(gated=gated, predicted=predicted, mean=mean, std=std, valid=len(fractions))


def audit_draw(prompt_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, prompt id)."""
    return stable_u64(seed, prompt_id) / 2**64


def audited(prompt_id: str, seed: int, share: float) -> bool:
    """Whether a gated prompt is solved anyway (share 0: never; share 1: always)."""
    return audit_draw(prompt_id, seed) < share


def zero_variance(corrects: Sequence[bool]) -> bool:
    """All solutions correct or all incorrect (a GRPO group without a gradient)."""
    return len(set(corrects)) <= 1


class GatingStats(msgspec.Struct, frozen=True):
    """Gating precision and recall; positive = "zero-variance group", predicted positive = gated.

    precision = P(zero variance | gated), measured on the audited gated prompts (the only
        gated ones whose group exists): audited_zero_var / audited.
    recall = P(gated | zero variance) = TP / (TP + FN), where FN are the *non-gated*
        prompts whose group turned out zero-variance (every non-gated prompt is solved, so
        these are all observed) and TP, over all gated prompts, is estimated from the audit
        sample: gated x precision. Recall therefore needs the non-gated outcomes too.
    Both are None while they have no data (no audited prompt; no positive at all).
    Pure: `record` returns a new value, so the stats can be checkpointed as they are.
    """

    gated: int = 0
    audited: int = 0
    audited_zero_var: int = 0
    open: int = 0  # not gated, solved
    open_zero_var: int = 0  # not gated but zero-variance: the false negatives

    def record(self, gated: bool, zero_var: bool | None) -> "GatingStats":
        """One prompt: was it gated, and was its solved group zero-variance (None: gated and
        not audited, so never solved)."""
        if gated:
            if zero_var is None:
                return msgspec.structs.replace(self, gated=self.gated + 1)
            return msgspec.structs.replace(self, gated=self.gated + 1, audited=self.audited + 1,
                                           audited_zero_var=self.audited_zero_var + zero_var)
        if zero_var is None:
            raise ValueError("a prompt that was not gated was solved: its zero-variance outcome is needed, got None")
        return msgspec.structs.replace(self, open=self.open + 1, open_zero_var=self.open_zero_var + zero_var)

    @property
    def precision(self) -> float | None:
        return self.audited_zero_var / self.audited if self.audited else None

    @property
    def recall(self) -> float | None:
        if self.gated and not self.audited:
            return None  # gated prompts exist but how many were right is unknown
        tp = self.gated * self.precision if self.gated else 0.0
        return tp / (tp + self.open_zero_var) if tp + self.open_zero_var > 0 else None

    @property
    def gated_share(self) -> float | None:
        total = self.gated + self.open
        return self.gated / total if total else None
