"""95% intervals for eval scores, and the verdict that compares two of them (pure).

Why these methods: pass@1 of a greedy run (n=1) is a binomial proportion over problems,
and the Wilson score interval keeps its coverage near 95% for the small counts and the
scores near 0 or 1 that small models produce (the normal-approximation interval collapses
to [0, 0] at 0 of 100). With n > 1 samples per problem the per-problem scores are no
longer 0/1, so the interval is a percentile bootstrap over problems (problems resampled
with replacement, `BOOTSTRAP_RESAMPLES` times, seeded: the same counts give the same
interval), which accounts for the spread between problems, the dominant variance.

A verdict says "beats" only when the two intervals do not overlap, a conservative
test: overlapping 95% intervals may still differ at the 5% level, but non-overlapping
ones do, so a "beats" is never a coin flip; everything else is "not distinguishable".
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from peirce.eval.passk import pass_at_k

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
Method = Literal["wilson", "bootstrap"]
Verdict = Literal["beats", "worse", "not distinguishable"]


class IntervalError(ValueError):
    """Counts or settings an interval cannot be computed from; the message names them."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: Method

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high <= 1.0):
            raise IntervalError(f"interval [{self.low}, {self.high}]: need 0 <= low <= high <= 1")

    def to_json(self) -> list[float]:
        return [self.low, self.high]


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise IntervalError(f"confidence={confidence!r}: must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a binomial proportion (no continuity correction)."""
    if type(trials) is not int or trials < 1 or type(successes) is not int or not 0 <= successes <= trials:
        raise IntervalError(f"wilson: successes={successes!r} of trials={trials!r}: need ints, 0 <= successes <= "
                            "trials, trials >= 1")
    z = _z(confidence)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # Clamp float noise only; at 0 or n successes the bound is exactly 0 or 1.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high, "wilson")


def bootstrap_mean(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of per-problem scores in [0, 1]."""
    n = len(values)
    if n < 1 or any(not 0.0 <= v <= 1.0 for v in values):
        raise IntervalError(f"bootstrap: need >= 1 value, each in [0, 1]; got {len(values)} values")
    if resamples < 100:
        raise IntervalError(f"bootstrap: resamples={resamples}: use at least 100")
    alpha = (1 - confidence) / 2
    _z(confidence)  # validates confidence
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    low = means[max(0, math.floor(alpha * resamples))]
    high = means[min(resamples - 1, math.ceil((1 - alpha) * resamples) - 1)]
    return Interval(low, high, "bootstrap")


def metric_intervals(correct: Sequence[int], n: int, k_values: Sequence[int],
                     confidence: float = CONFIDENCE) -> dict[str, Interval]:
    """Intervals for the metrics `passk.summarize` reports, from per-problem correct counts.

    n == 1: Wilson on (problems solved, problems) for pass@1 and avg@1. n > 1: bootstrap
    over problems of the per-problem pass@k (and c/n for avg@n).
    """
    if not correct:
        raise IntervalError("metric_intervals: correct=[]: need at least one problem")
    out: dict[str, Interval] = {}
    if n == 1:
        solved = sum(int(c) for c in correct)
        ci = wilson(solved, len(correct), confidence)
        for k in sorted(set(k_values)):
            out[f"pass@{k}"] = ci
        out["avg@1"] = ci
        return out
    for k in sorted(set(k_values)):
        out[f"pass@{k}"] = bootstrap_mean([pass_at_k(n, int(c), k) for c in correct], confidence)
    out[f"avg@{n}"] = bootstrap_mean([int(c) / n for c in correct], confidence)
    return out


def verdict(candidate: Interval, reference: Interval) -> Verdict:
    """"beats" when the candidate's interval lies wholly above the reference's, "worse" when
    wholly below, else "not distinguishable"."""
    if candidate.low > reference.high:
        return "beats"
    if candidate.high < reference.low:
        return "worse"
    return "not distinguishable"
