"""The meta reward: how well one meta rollout's prediction matched its prompt's solutions.

Group-level: it needs the same prompt's scored solution rollouts. The reward is the mean of
three parts, each in [0, 1], and a missing or invalid part scores 0:

- length: 1 if min(L_correct) < solution_length < max(L_correct), strictly, over the token
  lengths of the correct solutions; so 0 with fewer than two distinct correct lengths.
- pass rate: base ** |mean(correct) - pass_rate / k| (1 for an exact prediction; with
  base 0.01 a miss by 1/8 already scores 0.56). 0 without any solution (no truth).
- notions: peirce.masa.notions.notion_score.
"""

from __future__ import annotations

from collections.abc import Sequence

from peirce.masa.notions import notion_score
from peirce.masa.parse import parse_prediction
from peirce.masa.types import MetaPrediction, MetaReward, Solution


def length_score(solution_length: int | None, solutions: Sequence[Solution]) -> float:
    if solution_length is None:
        return 0.0
    lengths = [s.length for s in solutions if s.correct]
    if len(set(lengths)) < 2:
        return 0.0
    return 1.0 if min(lengths) < solution_length < max(lengths) else 0.0


def true_pass_fraction(solutions: Sequence[Solution]) -> float | None:
    """Share of correct solutions; None for no solutions."""
    return sum(s.correct for s in solutions) / len(solutions) if solutions else None


def pass_rate_score(pass_rate: int | None, solutions: Sequence[Solution], *, k: int, base: float) -> float:
    truth = true_pass_fraction(solutions)
    if pass_rate is None or truth is None:
        return 0.0
    return base ** abs(truth - pass_rate / k)


def meta_reward(prediction: MetaPrediction, problem: str, solutions: Sequence[Solution], *,
                k: int, base: float) -> MetaReward:
    length = length_score(prediction.solution_length, solutions)
    passed = pass_rate_score(prediction.pass_rate, solutions, k=k, base=base)
    notions = notion_score(prediction.notions, problem, solutions)
    return MetaReward(reward=(length + passed + notions) / 3, length=length, pass_rate=passed, notions=notions)


def score_response(response: str, problem: str, solutions: Sequence[Solution], *,
                   k: int, base: float) -> tuple[MetaPrediction, MetaReward]:
    """Parse one meta response and score it (the `peirce meta-score` path)."""
    prediction = parse_prediction(response, k)
    return prediction, meta_reward(prediction, problem, solutions, k=k, base=base)
