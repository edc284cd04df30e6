"""Side-by-side tables: column order, missing cells, partial averages, Markdown and JSON."""

from __future__ import annotations

import pytest
from eval_helpers import make_result

from peirce.eval.report import build_table


def rows():
    return [
        ("base", make_result("b", {"math": {"pass@1": 0.40}, "gpqa": {"pass@1": 0.30}})),
        ("deduction", make_result("d", {"math": {"pass@1": 0.42}})),
        ("merged", make_result("m", {"math": {"pass@1": 0.45}, "gpqa": {"pass@1": 0.35},
                                     "aime": {"pass@1": 0.10, "pass@8": 0.3}}, n=8)),
    ]


def test_columns_cells_and_averages():
    t = build_table(rows())
    assert t.columns == ["math", "gpqa", "aime"]
    base, ded, merged = t.rows
    assert base.cells == {"math": 0.40, "gpqa": 0.30, "aime": None}
    assert base.average == pytest.approx(0.35) and base.average_over == 2
    assert ded.average == pytest.approx(0.42) and ded.average_over == 1
    assert merged.average == pytest.approx(0.30) and merged.average_over == 3
    j = t.to_json()
    assert j["metric"] == "pass@1" and j["rows"][0]["cells"]["aime"] is None


def test_markdown_marks_missing_partial_and_best():
    md = build_table(rows()).to_markdown()
    lines = md.splitlines()
    assert lines[0] == "| model | math | gpqa | aime | average |"
    assert lines[2] == "| base | 40.0 | 30.0 | - | 35.0\\* |"
    assert lines[3] == "| deduction | 42.0 | - | - | **42.0**\\* |"
    assert lines[4] == "| merged | **45.0** | **35.0** | **10.0** | 30.0 |"
    assert "average over the suites present" in md


def test_other_metric_missing_where_runs_lack_it():
    t = build_table(rows(), metric="pass@8")
    assert [r.cells["aime"] for r in t.rows] == [None, None, 0.3]
    assert t.rows[0].average is None and "| base | - | - | - | - |" in t.to_markdown()


def test_bad_rows():
    with pytest.raises(ValueError, match="distinct"):
        build_table([("a", make_result("x", {})), ("a", make_result("y", {}))])
    with pytest.raises(ValueError, match="at least one"):
        build_table([])


def test_cells_show_the_95_interval_and_the_footnote_names_the_method():
    from peirce.eval.runner import EvalResult, EvalSettings, SuiteResult

    def result(value, ci):
        suite = SuiteResult(suite="maa-deduction", tasks=100, samples=100, metrics={"pass@1": value}, mean_reward=0.0,
                            format_rate=1.0, truncated_rate=0.0, reward_errors=0, correct_per_task=[],
                            intervals={"pass@1": ci}, interval_method="wilson")
        return EvalResult(model="m", settings=EvalSettings(), suites={"maa-deduction": suite}, samples_path=None,
                          seconds=1.0)

    t = build_table([("base", result(0.0, [0.0, 0.037])), ("ded", result(0.37, [0.2818, 0.4678])),
                     ("old", make_result("o", {"maa-deduction": {"pass@1": 0.1}}))])
    md = t.to_markdown()
    assert "| base | 0.0 [0.0, 3.7] | 0.0 |" in md
    assert "| ded | **37.0** [28.2, 46.8] | **37.0** |" in md
    assert "| old | 10.0 | 10.0 |" in md  # a result without intervals (older file) shows the score alone
    assert "95% interval (Wilson score interval over problems)" in md
    assert t.to_json()["rows"][1]["intervals"] == {"maa-deduction": [0.2818, 0.4678]}
