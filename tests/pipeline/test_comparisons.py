"""Report verdicts (beats / not distinguishable, with intervals) and learning-signal flags."""

from __future__ import annotations

import json

from pipeline_helpers import make_result

from peirce.pipeline.comparisons import (FORMAT, Signal, compare, domain_comparisons, merged_comparisons, run_signal,
                                         specialist_comparisons)

SUITES = ["maa-deduction", "maa-induction", "maa-abduction", "math-sample"]


def _counts(solved: int, n: int = 100) -> list[int]:
    return [1] * solved + [0] * (n - solved)


def _res(**scores):
    """suite -> solved of 100 (keyword names use _ for -)."""
    suites = {k.replace("_", "-"): v for k, v in scores.items()}
    return make_result("m", {s: {"pass@1": v / 100} for s, v in suites.items()},
                       {s: _counts(v) for s, v in suites.items()})


def test_specialist_vs_base_warmup_and_what_rl_added():
    results = {"base": _res(maa_deduction=0, maa_induction=2, maa_abduction=0),
               "deduction-warmup": _res(maa_deduction=30), "deduction": _res(maa_deduction=34),
               "induction": _res(maa_induction=5)}  # no induction warm-up
    got = {(c.candidate, c.reference, c.suite): c.verdict
           for c in specialist_comparisons(results, {"deduction": ["deduction"], "induction": ["induction"]},
                                           SUITES, "pass@1")}
    assert got == {("deduction-warmup", "base", "maa-deduction"): "beats",
                   ("deduction", "base", "maa-deduction"): "beats",
                   ("deduction", "deduction-warmup", "maa-deduction"): "not distinguishable",
                   ("induction", "base", "maa-induction"): "not distinguishable"}  # 5/100 vs 2/100 overlap


def test_merged_must_beat_base_on_every_maa_suite():
    base = _res(maa_deduction=0, maa_induction=0, maa_abduction=0, math_sample=0)
    all_better = _res(maa_deduction=40, maa_induction=35, maa_abduction=30, math_sample=0)
    comps, beats_all = merged_comparisons({"base": base, "merged": all_better}, SUITES, "pass@1")
    assert beats_all and [c.suite for c in comps] == SUITES[:3]  # MAA suites only
    one_tie = _res(maa_deduction=40, maa_induction=2, maa_abduction=30)
    comps, beats_all = merged_comparisons({"base": base, "merged": one_tie}, SUITES, "pass@1")
    assert not beats_all and [c.verdict for c in comps] == ["beats", "not distinguishable", "beats"]
    assert merged_comparisons({"base": base}, SUITES, "pass@1") == ([], False)


def test_sentence_states_both_scores_with_intervals():
    c = compare({"a": _res(maa_deduction=37), "base": _res(maa_deduction=0)}, "a", "base", "maa-deduction", "pass@1")
    assert c.sentence() == ("a beats base on maa-deduction: 37.0 [28.2, 46.8] vs 0.0 [0.0, 3.7] (100 problems)")


def test_results_without_intervals_get_no_verdict():
    old = make_result("o", {"maa-deduction": {"pass@1": 0.9}})
    c = compare({"a": old, "base": _res(maa_deduction=0)}, "a", "base", "maa-deduction", "pass@1")
    assert c.verdict == "no interval" and "has no interval" in c.sentence()
    assert compare({"a": old}, "a", "base", "maa-deduction", "pass@1") is None


def test_signal_flag_from_run_summary(tmp_path):
    (tmp_path / "run_summary.json").write_text(json.dumps({
        "step": 5, "no_signal": True, "no_signal_steps": 4,
        "no_signal_episodes": [{"start": 2, "end": None, "steps": 4, "cause": "format_never_produced"}]}))
    s = run_signal(tmp_path)
    assert s.flagged and s.text == "NO SIGNAL: 4 of 5 steps without reward variance (format_never_produced)"
    (tmp_path / "run_summary.json").write_text(json.dumps({"step": 3, "no_signal": False, "no_signal_steps": 1}))
    assert run_signal(tmp_path) == Signal(False, "ok (signal in 2 of 3 steps)")
    # a 2-step run never reaches the guard's 3-step window, but no step had signal: flagged anyway
    (tmp_path / "run_summary.json").write_text(json.dumps({"step": 2, "no_signal": False, "no_signal_steps": 2}))
    assert run_signal(tmp_path).flagged


def test_signal_flag_from_metrics_when_there_is_no_summary(tmp_path):
    def write(rows):
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write([{"step": 1, "no_signal_steps": 1, "no_signal": False, "no_signal_cause": "task_too_hard"},
           {"step": 2, "no_signal_steps": 2, "no_signal": False, "no_signal_cause": "task_too_hard"}])
    assert run_signal(tmp_path) == Signal(True, "NO SIGNAL: 2 of 2 steps without reward variance (task_too_hard)")
    write([{"step": 1, "no_signal_steps": 1, "no_signal": False}, {"step": 2, "no_signal_steps": 0}])
    assert run_signal(tmp_path) == Signal(False, "ok (signal in 1 of 2 steps)")
    write([{"step": 1, "reward_mean": 0.5}])  # a trainer that records nothing about it
    assert run_signal(tmp_path).flagged is None and run_signal(tmp_path / "missing").text == "unknown"


def test_format_rate_comparison_uses_wilson_over_samples():
    from peirce.eval.intervals import wilson
    from peirce.pipeline.comparisons import FORMAT

    import msgspec

    warm = _res(maa_deduction=0)
    good = msgspec.structs.replace(warm.suites["maa-deduction"], format_rate=0.97)
    bad = msgspec.structs.replace(warm.suites["maa-deduction"], format_rate=0.0)
    results = {"w": msgspec.structs.replace(warm, suites={"maa-deduction": good}),
               "base": msgspec.structs.replace(warm, suites={"maa-deduction": bad})}
    c = compare(results, "w", "base", "maa-deduction", FORMAT)
    assert c.verdict == "beats" and c.cand.interval == wilson(97, 100)
    assert compare(results, "w", "base", "maa-deduction", "pass@1").verdict == "not distinguishable"


def test_a_run_that_ran_out_of_tasks_is_flagged(tmp_path):
    (tmp_path / "run_summary.json").write_text(json.dumps({
        "step": 1, "no_signal": False, "no_signal_steps": 0, "ended_early": "x: the task source ran out"}))
    sig = run_signal(tmp_path)
    assert sig.flagged is True and sig.text == "ok; ENDED EARLY: the task source ran out at step 1"


def _leveled(name, per_level):
    """One maa-deduction result whose L1 and L2 tasks (100 each) have `per_level[level]` solved."""
    counts = [1] * per_level[1] + [0] * (100 - per_level[1]) + [1] * per_level[2] + [0] * (100 - per_level[2])
    return make_result(name, {"maa-deduction": {"pass@1": sum(counts) / 200}}, {"maa-deduction": counts},
                       levels={"maa-deduction": [1] * 100 + [2] * 100})


def test_comparisons_by_level_separate_a_gain_on_l1_from_none_on_l2():
    results = {"base": _leveled("base", {1: 0, 2: 0}), "deduction-warmup": _leveled("w", {1: 40, 2: 0}),
               "deduction": _leveled("d", {1: 45, 2: 1}), "merged": _leveled("m", {1: 30, 2: 0})}
    whole = specialist_comparisons(results, {"deduction": ["deduction"]}, ["maa-deduction"], "pass@1")
    assert [(c.level, c.verdict) for c in whole][:2] == [(None, "beats"), (None, "beats")]
    split = specialist_comparisons(results, {"deduction": ["deduction"]}, ["maa-deduction"], "pass@1", by_level=True)
    got = {(c.candidate, c.reference, c.level): c.verdict for c in split}
    assert got == {("deduction-warmup", "base", 1): "beats", ("deduction", "base", 1): "beats",
                   ("deduction", "deduction-warmup", 1): "not distinguishable",
                   ("deduction-warmup", "base", 2): "not distinguishable",
                   ("deduction", "base", 2): "not distinguishable",
                   ("deduction", "deduction-warmup", 2): "not distinguishable"}
    l1 = next(c for c in split if c.level == 1 and c.reference == "base" and c.candidate == "deduction")
    assert l1.cand.tasks == 100 and l1.cand.value == 0.45
    assert l1.sentence().startswith("deduction beats base on maa-deduction L1: 45.0 [")
    merged, beats_all = merged_comparisons(results, ["maa-deduction"], "pass@1", by_level=True)
    assert [(c.level, c.verdict) for c in merged] == [(1, "beats"), (2, "not distinguishable")] and not beats_all
    # no per-level format counts are kept, so format comparisons by level are absent, not wrong
    assert specialist_comparisons(results, {"deduction": ["deduction"]}, ["maa-deduction"], FORMAT,
                                  by_level=True) == []


def test_a_single_level_suite_is_compared_whole_even_by_level():
    one = {n: make_result(n, {"maa-deduction": {"pass@1": v / 100}}, {"maa-deduction": [1] * v + [0] * (100 - v)},
                          levels={"maa-deduction": [1] * 100}) for n, v in (("base", 0), ("merged", 20))}
    merged, _ = merged_comparisons(one, ["maa-deduction"], "pass@1", by_level=True)
    assert [(c.level, c.verdict) for c in merged] == [(None, "beats")]


def test_domain_runs_compared_with_each_other_and_with_their_start():
    def res(name, k):
        return make_result(name, {"math-sample": {"pass@1": k / 8}}, {"math-sample": [1] * k + [0] * (8 - k)})

    results = {"base": res("base", 1), "merged": res("merged", 2), "domain-from-merged": res("dm", 3),
               "domain-from-base": res("db", 1)}
    got = [(c.candidate, c.reference, c.verdict) for c in
           domain_comparisons(results, ["maa-deduction", "math-sample"], "pass@1")]
    assert got == [("domain-from-merged", "domain-from-base", "not distinguishable"),
                   ("domain-from-merged", "merged", "not distinguishable"),
                   ("domain-from-base", "base", "not distinguishable")]
