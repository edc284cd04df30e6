"""One suite's scores split by task level.

A suite that mixes L1 and L2 hides where a model gained: a warm-up on L1 can lift the
suite's mean while L2 stays at zero. Each level gets the suite's own metrics and 95%
intervals, computed the same way (`passk.summarize`, `intervals.metric_intervals`) from
the per-task counts a result keeps (`SuiteResult.correct_per_task`, `level_per_task`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peirce.eval.intervals import Interval, metric_intervals
from peirce.eval.passk import summarize


@dataclass(frozen=True)
class LevelScores:
    level: int
    tasks: int
    metrics: dict[str, float]  # as SuiteResult.metrics
    intervals: dict[str, Interval]


def scores_by_level(suite_result, n: int, k_values: Sequence[int]) -> list[LevelScores]:
    """Per level, in ascending order; [] for results written before levels were kept."""
    levels, counts = suite_result.level_per_task, suite_result.correct_per_task
    if not levels or len(levels) != len(counts):
        return []
    out = []
    for level in sorted(set(levels)):
        mine = [c for c, lv in zip(counts, levels) if lv == level]
        out.append(LevelScores(level, len(mine), summarize([(n, c) for c in mine], k_values),
                               metric_intervals(mine, n, k_values)))
    return out


def level_scores(result, suite: str, level: int) -> LevelScores | None:
    """`level`'s scores of `suite` in an EvalResult, or None when it has none."""
    res = result.suites.get(suite) if result is not None else None
    if res is None:
        return None
    found = [s for s in scores_by_level(res, result.settings.n, result.settings.k_values) if s.level == level]
    return found[0] if found else None


def suite_levels(results: Sequence, suite: str) -> list[int]:
    """The levels any of `results` (EvalResults) holds for `suite`, ascending."""
    return sorted({lv for r in results if r is not None and suite in r.suites for lv in r.suites[suite].level_per_task})
