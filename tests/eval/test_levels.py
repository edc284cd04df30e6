"""Scores split by level: each level's metric and interval equal the suite computation on that
level's tasks alone; results without levels give nothing rather than a wrong split."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
from pipeline_helpers import make_result  # noqa: E402

from peirce.eval.intervals import metric_intervals, wilson  # noqa: E402
from peirce.eval.levels import level_scores, scores_by_level, suite_levels  # noqa: E402
from peirce.eval.report import build_level_table  # noqa: E402


def _res(counts, levels, suite="maa-deduction"):
    return make_result("m", {suite: {"pass@1": sum(counts) / len(counts)}}, {suite: counts}, levels={suite: levels})


def test_each_level_scores_its_own_tasks_only():
    counts = [1, 0, 1, 1, 0, 0, 0, 1, 0, 0]
    levels = [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    res = _res(counts, levels)
    by = scores_by_level(res.suites["maa-deduction"], 1, [1])
    assert [(s.level, s.tasks, s.metrics["pass@1"]) for s in by] == [(1, 4, 0.75), (2, 6, pytest.approx(1 / 6))]
    assert by[0].intervals["pass@1"] == wilson(3, 4) and by[1].intervals == metric_intervals([0, 0, 0, 1, 0, 0], 1, [1])
    assert level_scores(res, "maa-deduction", 2) == by[1]
    assert level_scores(res, "maa-deduction", 3) is None and level_scores(res, "maa-induction", 1) is None
    assert suite_levels([res, None], "maa-deduction") == [1, 2]


def test_results_without_per_task_levels_have_no_split():
    old = make_result("m", {"maa-deduction": {"pass@1": 0.5}}, {"maa-deduction": [1, 0]})  # written before levels
    assert scores_by_level(old.suites["maa-deduction"], 1, [1]) == []
    assert build_level_table([("old", old)]) is None


def test_level_table_has_a_column_per_level_of_multi_level_suites_only():
    a = make_result("a", {"maa-deduction": {"pass@1": 0.5}, "math-sample": {"pass@1": 0.5}},
                    {"maa-deduction": [1, 0, 0, 1], "math-sample": [1, 0]},
                    levels={"maa-deduction": [1, 1, 2, 2], "math-sample": [1, 1]})
    b = _res([0, 0, 0, 0], [1, 1, 2, 2])
    table = build_level_table([("a", a), ("b", b)])
    assert table.columns == ["maa-deduction L1", "maa-deduction L2"]  # math-sample has one level: not split
    assert [r.cells for r in table.rows] == [{"maa-deduction L1": 0.5, "maa-deduction L2": 0.5},
                                             {"maa-deduction L1": 0.0, "maa-deduction L2": 0.0}]
    md = table.to_markdown()
    assert "| a | **50.0** [9.5, 90.5] | **50.0** [9.5, 90.5] | **50.0** |" in md
    assert "Wilson" in md
