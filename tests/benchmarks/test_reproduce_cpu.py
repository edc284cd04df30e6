"""benchmarks/reproduce_cpu.py read back from a finished run's files (real results.json, real
report comparisons; no training): every score with its interval and baseline, every verdict,
wall time and memory, as JSON lines from the script itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from pipeline_helpers import make_result  # noqa: E402
from reproduce_cpu import load_run, run_records, score_records, verdict_records  # noqa: E402

from peirce.config import load_config  # noqa: E402
from peirce.eval.runner import save_result  # noqa: E402
from peirce.pipeline.config import PipelineConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _finished_run(root: Path) -> Path:
    pc = load_config(PipelineConfig, REPO / "configs" / "reproduce-cpu.yaml", [f"run_dir={root}"])
    (root / "pipeline.yaml").write_text(json.dumps(pc.model_dump(mode="json")))
    levels = [1] * 100 + [2] * 100

    def counts(l1, l2):
        return [1] * l1 + [0] * (100 - l1) + [1] * l2 + [0] * (100 - l2)

    for name, (l1, l2) in {"base": (0, 0), "deduction-warmup": (40, 0), "deduction": (45, 12)}.items():
        res = make_result(name, {"maa-deduction": {"pass@1": (l1 + l2) / 200}}, {"maa-deduction": counts(l1, l2)},
                          levels={"maa-deduction": levels})
        save_result(res, root / "eval" / name / "results.json")
    (root / "DONE").write_text(json.dumps({"stage_a": 3000.0, "eval": 1500.5}))
    (root / "memory_peak.json").write_text(json.dumps({"rss_sum_gib": 16.0, "system_used_gib": 13.8,
                                                       "system_used_at_start_gib": 1.0, "system_total_gib": 23.4,
                                                       "samples": 10, "interval_s": 1.0}))
    return root


def test_scores_verdicts_and_run_figures_of_a_finished_run(tmp_path):
    pc, results = load_run(_finished_run(tmp_path))
    scores = {r["metric"]: r for r in score_records(results)}
    assert set(scores) == {f"pass@1/maa-deduction{lv}/{n}" for lv in ("", "/L1", "/L2")
                           for n in ("base", "deduction-warmup", "deduction")}
    l2 = scores["pass@1/maa-deduction/L2/deduction"]
    assert (l2["value"], l2["baseline"], l2["problems"]) == (0.12, 0.0, 100)
    assert l2["interval"][0] > 0.06 and l2["interval"][1] < 0.21
    assert scores["pass@1/maa-deduction/base"]["baseline"] is None
    verdicts = {r["metric"]: r["verdict"] for r in verdict_records(pc, results)}
    assert verdicts["verdict/deduction_vs_base/maa-deduction/L2"] == "beats"
    assert verdicts["verdict/deduction-warmup_vs_base/maa-deduction/L2"] == "not distinguishable"
    assert verdicts["verdict/deduction_vs_deduction-warmup/maa-deduction/L1"] == "not distinguishable"
    assert verdicts["verdict/deduction_vs_base/maa-deduction"] == "beats"
    figures = {r["metric"]: r["value"] for r in run_records(tmp_path)}
    assert figures == {"wall_time": 4500.5, "peak_machine_memory": 13.8}


def test_the_script_prints_one_json_object_per_line(tmp_path):
    run = _finished_run(tmp_path)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reproduce_cpu.py"), "--summarize-only",
                          "--run-dir", str(run)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(r["bench"] == "reproduce_cpu" and "host" in r for r in lines)
    by = {r["metric"]: r for r in lines}
    assert by["pass@1/maa-deduction/L1/deduction"]["ratio"] is None  # base solved 0: no ratio, not a division error
    assert by["verdict/deduction_vs_base/maa-deduction/L2"]["verdict"] == "beats"


def test_a_folder_without_results_is_refused_by_name(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(json.dumps(PipelineConfig().model_dump(mode="json")))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reproduce_cpu.py"), "--summarize-only",
                          "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode != 0 and "no eval/*/results.json" in out.stderr
