"""`peirce run` with profile=smoke, end to end and for real: a supervised warm-up per
specialist (DeepSpeed in Ray tasks), three specialists training concurrently from their
warm-ups (Ray, vLLM, DeepSpeed, ZeroMQ), a mergekit merge, domain RL from the merge and from
the base, evaluation of every checkpoint (warm-ups included), a report with intervals,
verdicts and plots; then a re-run skips every completed stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peirce.actors.runtime import VERBOSE_ENV

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]


def test_smoke_pipeline_runs_every_stage_and_resumes(tmp_path):
    run_dir = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "peirce.cli.main", "run", str(REPO / "configs" / "smoke.yaml"), f"run_dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}  # the console as a user sees it
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    assert first.returncode == 0, first.stderr[-4000:]
    for spec in ("deduction", "induction", "abduction"):
        warm = run_dir / "stage_a" / spec / "warmup"
        done = json.loads((warm / "DONE").read_text())
        sft = [json.loads(x) for x in (warm / "metrics.jsonl").read_text().splitlines()]
        assert len(sft) == done["steps"] >= 1 and all(r["sft_loss"] > 0 for r in sft)
        config = (run_dir / "stage_a" / spec / "config.yaml").read_text()
        assert f"path: {done['model_dir']}" in config  # RL starts from the warm-up's checkpoint
        assert (run_dir / "stage_a" / spec / "DONE").exists()
        rows = [json.loads(x) for x in (run_dir / "stage_a" / spec / "metrics.jsonl").read_text().splitlines()]
        assert rows and all(f"reward/{spec}/L1" in r for r in rows)
        assert all(r["level"] == 1 for r in rows)  # the level each step trained (never None)
    merged = run_dir / "stage_b" / "merged"
    assert (merged / "config.json").exists() and (merged / "merge.yaml").exists()
    for start in ("merged", "base"):
        assert (run_dir / "stage_c" / f"domain-from-{start}" / "DONE").exists()
    table = json.loads((run_dir / "eval_table.json").read_text())
    assert [r["name"] for r in table["rows"]] == [
        "base", "deduction-warmup", "deduction", "induction-warmup", "induction", "abduction-warmup", "abduction",
        "merged", "domain-from-merged", "domain-from-base"]
    assert table["rows"][0]["intervals"]["maa-deduction"] is not None
    report = (run_dir / "report.md").read_text()
    assert "| domain-from-merged |" in report
    for section in ("## Warm-up", "## Verdicts", "Peak memory", "Wall time", "learning signal",
                    "deduction-warmup is not distinguishable from base on maa-deduction"):
        assert section in report, section
    for png in ("reward_per_step.png", "eval_table.png", "warmup_loss.png"):
        assert (run_dir / png).stat().st_size > 5000
    peak = json.loads((run_dir / "memory_peak.json").read_text())
    assert 0 < peak["system_used_gib"] <= peak["system_total_gib"] and peak["samples"] > 0
    assert set(peak["system_used_by_stage_gib"]) == {"stage_a_warmup", "stage_a", "stage_b", "stage_c", "eval"}
    assert max(peak["system_used_by_stage_gib"].values()) <= peak["system_used_gib"]
    # the console: a line per stage start and end, the evaluation table and verdicts at the end;
    # the controllers' INFO lines (workers started, drained) stay in their logs
    for stage in ("stage A warm-up", "stage A specialists (RL)", "stage B merge", "stage C domain RL", "evaluation"):
        assert f"{stage}: start" in first.stderr and f"{stage}: done in " in first.stderr, stage
    assert "pass@1 with 95% intervals" in first.stdout and "| merged |" in first.stdout
    assert "draining rollout-0" not in first.stderr + first.stdout
    assert "draining rollout-0" in (run_dir / "stage_a" / "deduction" / "logs" / "controller.log").read_text()
    mtimes = {p: p.stat().st_mtime for p in run_dir.rglob("model.safetensors")}

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "already complete; skipping" in again.stderr
    assert "stage_a/deduction warm-up already complete; skipping" in again.stderr
    assert {p: p.stat().st_mtime for p in run_dir.rglob("model.safetensors")} == mtimes  # nothing retrained
