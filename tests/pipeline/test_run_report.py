"""The run report from a finished run's files: intervals, verdicts, signal flags, warm-ups,
wall time and peak memory (real files, real plots; no training)."""

from __future__ import annotations

import json
from dataclasses import asdict

from pipeline_helpers import make_result

from peirce.config import load_config
from peirce.eval.runner import save_result
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.monitor import MemoryPeak
from peirce.pipeline.report import write_report
from peirce.pipeline.resolve import domain_configs, stage_a_configs
from peirce.sft.loop import SFTSummary
from peirce.trainer.run_dir import RunDir

MAA = ("maa-deduction", "maa-induction", "maa-abduction")


def _write_runs(runs, warmups):
    for name, cfg in runs.items():
        rd = RunDir.create(cfg.run_dir)
        for step in (1, 2):
            rd.append_metrics({"step": step, "reward_mean": -3.0 if name == "abduction" else 0.5, "level": step,
                               "no_signal_steps": step if name == "abduction" else 0})
        if name != "abduction":  # abduction leaves only metrics.jsonl: the flag comes from there
            rd.write_summary({"step": 2, "no_signal": False, "no_signal_steps": 0})
    for name, w in warmups.items():
        rd = RunDir.create(w.run_dir)
        for step in (1, 2, 3):
            rd.append_metrics({"step": step, "sft_loss": 2.0 / step})
        summary = SFTSummary(run_dir=w.run_dir, model_dir=f"{w.run_dir}/checkpoints/step-000003", steps=3,
                             examples=12, dropped=0, epochs=1, first_loss=2.0, last_loss=0.667, target_tokens=999,
                             seconds=42.0)
        rd.done_path.write_text(json.dumps(asdict(summary)))


def _solved(k):
    return [1] * k + [0] * (100 - k)


def test_report_has_intervals_verdicts_flags_memory_and_wall_time(tmp_path):
    pc = load_config(PipelineConfig, "configs/default.yaml", [f"run_dir={tmp_path}"])
    runs, warmups = stage_a_configs(pc)
    dom = domain_configs(pc, str(tmp_path / "merged"))
    _write_runs({**runs, **dom}, warmups)
    scores = {"base": {s: 0 for s in MAA}, "merged": {"maa-deduction": 40, "maa-induction": 1, "maa-abduction": 35}}
    for spec in ("deduction", "induction", "abduction"):
        scores[f"{spec}-warmup"] = {f"maa-{spec}": 30}
        scores[spec] = {f"maa-{spec}": 33}
    results = {}
    for name, by_suite in scores.items():
        res = make_result(name, {s: {"pass@1": v / 100} for s, v in by_suite.items()},
                          {s: _solved(v) for s, v in by_suite.items()}, format_rate=0.0 if name == "base" else 0.95)
        results[name] = save_result(res, tmp_path / "eval" / name / "results.json")
    memory = MemoryPeak(rss_sum_gib=17.9, system_used_gib=13.2, system_used_at_start_gib=1.5, system_total_gib=24.0,
                        samples=1800, interval_s=1.0, system_used_by_stage_gib={"stage_a": 13.2, "eval": 4.04})
    timings = {"stage_a_warmup": 300.0, "stage_a": 600.0, "stage_b": 10.0, "stage_c": 200.0, "eval": 1500.0}
    report = write_report(pc, tmp_path, {**runs, **dom}, results, timings, warmups=warmups, memory=memory)
    md = report.read_text()
    assert "Wall time of this invocation: 2610 s (43.5 min" in md
    assert "17.9 GiB summed RSS" in md and "peaked at 13.2 of 24.0 GiB (1.5 GiB in use at start)" in md
    assert "| stage_a | 600 | 13.2 |" in md and "| eval | 1500 | 4.0 |" in md and "| stage_b | 10 | - |" in md
    assert "| deduction | [1] | 12 | 3 | 0.0003 | 2.000 | 0.667 | 42 |" in md  # warm-up table
    assert "| abduction | 2 | -3.000 | -3.000 | 2 | NO SIGNAL: 2 of 2 steps without reward variance |" in md
    assert "| deduction | 2 | 0.500 | 0.500 | 2 | ok |" in md
    assert "| base | 0.0 [0.0, 3.7] | 0.0 [0.0, 3.7] | 0.0 [0.0, 3.7] | 0.0 |" in md
    assert "| deduction-warmup | 30.0 [21.9, 39.6] | - | - | 30.0\\* |" in md  # own suite only
    assert "| maa-induction | 100 |" in md  # problems per suite
    assert "- deduction-warmup beats base on maa-deduction: 30.0 [21.9, 39.6] vs 0.0 [0.0, 3.7]" in md
    assert "- deduction is not distinguishable from deduction-warmup on maa-deduction" in md
    assert "Merged vs base on all 3 MAA suites: **does not beat base on all of them**." in md
    assert "- merged is not distinguishable from base on maa-induction: 1.0 [0.2, 5.4]" in md
    fmt = md[md.index("### Format adherence"):]
    assert "- deduction-warmup beats base on maa-deduction: 95.0 [88.8, 97.8] vs 0.0 [0.0, 3.7]" in fmt
    assert "Merged vs base on all 3 MAA suites: **beats base on all of them**." in fmt
    # what `peirce run` prints at the end: the table and the pass@1 verdicts, nothing else of the report
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("pass@1 with 95% intervals (43.5 min):")
    assert "| deduction-warmup | 30.0 [21.9, 39.6] | - | - | 30.0\\* |" in summary
    assert "- deduction-warmup beats base on maa-deduction: 30.0 [21.9, 39.6] vs 0.0 [0.0, 3.7]" in summary
    assert "Merged vs base on all 3 MAA suites: **does not beat base on all of them**." in summary
    assert "Format adherence" not in summary and "Wall time" not in summary
    rows = [r["name"] for r in json.loads((tmp_path / "eval_table.json").read_text())["rows"]]
    assert rows == ["base", "deduction-warmup", "deduction", "induction-warmup", "induction", "abduction-warmup",
                    "abduction", "merged"]
    for png in ("reward_per_step.png", "eval_table.png", "warmup_loss.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_report_splits_multi_level_suites_by_level_and_compares_domain_runs(tmp_path):
    pc = load_config(PipelineConfig, "configs/reproduce-cpu.yaml", [f"run_dir={tmp_path}"])
    runs, warmups = stage_a_configs(pc)
    dom = domain_configs(pc, str(tmp_path / "merged"))
    _write_runs({**runs, **dom}, warmups)
    levels = [1] * 100 + [2] * 100

    def two_levels(l1, l2):
        return [1] * l1 + [0] * (100 - l1) + [1] * l2 + [0] * (100 - l2)

    solved = {"base": (0, 0), "merged": (30, 0)}
    for spec in ("deduction", "induction", "abduction"):
        solved[f"{spec}-warmup"], solved[spec] = (40, 0), (45, 10)
    results = {}
    for name, (l1, l2) in solved.items():
        suites = MAA if name in ("base", "merged") else (f"maa-{name.removesuffix('-warmup')}",)
        counts = {s: two_levels(l1, l2) for s in suites}
        if name in ("base", "merged"):
            counts["math-sample"] = [1] + [0] * 7
        res = make_result(name, {s: {"pass@1": sum(c) / len(c)} for s, c in counts.items()}, counts,
                          levels={s: levels if s in MAA else [1] * 8 for s in counts})
        results[name] = save_result(res, tmp_path / "eval" / name / "results.json")
    for name in dom:
        res = make_result(name, {"math-sample": {"pass@1": 0.25}}, {"math-sample": [1, 1] + [0] * 6},
                          levels={"math-sample": [1] * 8})
        results[name] = save_result(res, tmp_path / "eval" / name / "results.json")
    md = write_report(pc, tmp_path, {**runs, **dom}, results, {"eval": 1.0}, warmups=warmups).read_text()
    by_level = md[md.index("## By level"):]
    assert "| model | maa-deduction L1 | maa-deduction L2 | maa-induction L1 |" in by_level
    assert "math-sample L1" not in by_level  # a one-level suite is not split
    assert "| domain-from-merged |" not in by_level  # evaluated on no split suite: no empty row
    assert "- deduction beats base on maa-deduction L2: 10.0 [5.5, 17.4] vs 0.0 [0.0, 3.7] (100 problems)" in by_level
    assert "- deduction is not distinguishable from deduction-warmup on maa-deduction L1: 45.0" in by_level
    assert "Merged vs base on all 6 MAA suite levels: **does not beat base on all of them**." in by_level
    assert "- merged beats base on maa-abduction L1: 30.0 [21.9, 39.6]" in by_level
    assert "- domain-from-merged is not distinguishable from domain-from-base on math-sample: 25.0" in md
    assert "- domain-from-base is not distinguishable from base on math-sample: 25.0" in md
    assert "## By level" in (tmp_path / "summary.md").read_text()
