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


def _level(counts: Sequence[int], levels: Sequence[int], level: int, n: int, k_values: Sequence[int]) -> LevelScores:
    mine = [c for c, lv in zip(counts, levels) if lv == level]
    return LevelScores(level, len(mine), summarize([(n, c) for c in mine], k_values),
                       metric_intervals(mine, n, k_values))


def _has_levels(suite_result) -> bool:
    """False for results written before levels were kept."""
    levels = suite_result.level_per_task
    return bool(levels) and len(levels) == len(suite_result.correct_per_task)


def scores_by_level(suite_result, n: int, k_values: Sequence[int]) -> list[LevelScores]:
    """Per level, in ascending order; [] for results written before levels were kept."""
    if not _has_levels(suite_result):
        return []
    levels, counts = suite_result.level_per_task, suite_result.correct_per_task
    return [_level(counts, levels, level, n, k_values) for level in sorted(set(levels))]


def level_scores(result, suite: str, level: int) -> LevelScores | None:
    """`level`'s scores of `suite` in an EvalResult, or None when it has none. Only that level is
    computed (a bootstrap interval per level is not free when n > 1)."""
    res = result.suites.get(suite) if result is not None else None
    if res is None or not _has_levels(res) or level not in res.level_per_task:
        return None
    return _level(res.correct_per_task, res.level_per_task, level, result.settings.n, result.settings.k_values)


def suite_levels(results: Sequence, suite: str) -> list[int]:
    """The levels any of `results` (EvalResults) holds for `suite`, ascending."""
    return sorted({lv for r in results if r is not None and suite in r.suites for lv in r.suites[suite].level_per_task})
