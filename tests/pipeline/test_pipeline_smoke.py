"""`peirce run` with profile=smoke, end to end and for real: three specialists training
concurrently (Ray, vLLM, DeepSpeed, ZeroMQ), a mergekit merge, domain RL from the merge
and from the base, evaluation of every checkpoint, a report with plots; then a re-run
skips every completed stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]


def test_smoke_pipeline_runs_every_stage_and_resumes(tmp_path):
    run_dir = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "peirce.cli.main", "run", str(REPO / "configs" / "smoke.yaml"), f"run_dir={run_dir}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stderr[-4000:]
    for spec in ("deduction", "induction", "abduction"):
        assert (run_dir / "stage_a" / spec / "DONE").exists()
        rows = [json.loads(x) for x in (run_dir / "stage_a" / spec / "metrics.jsonl").read_text().splitlines()]
        assert rows and all(f"reward/{spec}/L1" in r for r in rows)
        assert all(r["level"] == 1 for r in rows)  # the level each step trained (never None)
    merged = run_dir / "stage_b" / "merged"
    assert (merged / "config.json").exists() and (merged / "merge.yaml").exists()
    for start in ("merged", "base"):
        assert (run_dir / "stage_c" / f"domain-from-{start}" / "DONE").exists()
    table = json.loads((run_dir / "eval_table.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["base", "deduction", "induction", "abduction", "merged",
                                                 "domain-from-merged", "domain-from-base"]
    report = (run_dir / "report.md").read_text()
    assert "| domain-from-merged |" in report
    for png in ("reward_per_step.png", "eval_table.png"):
        assert (run_dir / png).stat().st_size > 5000
    mtimes = {p: p.stat().st_mtime for p in run_dir.rglob("model.safetensors")}

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "already complete; skipping" in again.stderr
    assert {p: p.stat().st_mtime for p in run_dir.rglob("model.safetensors")} == mtimes  # nothing retrained
