"""Resume bookkeeping of a run directory, without Ray."""

from __future__ import annotations

import json

from peirce.trainer.run_dir import RunDir


def test_truncate_after_drops_metrics_ledger_and_drops_of_redone_steps(tmp_path):
    """A learner killed while saving step 3 leaves step 3's lines behind checkpoint 2: resuming
    redoes step 3, so its old lines must go from all three files (else its tasks count twice)."""
    rd = RunDir.create(tmp_path / "run")
    for step in (1, 2, 3):
        rd.append_jsonl(rd.metrics_path, [{"step": step, "reward_mean": 0.1 * step}])
        rd.append_jsonl(rd.ledger_path, [{"step": step, "group_id": f"g{step}", "task_id": f"t{step}"}])
    rd.append_jsonl(rd.drops_path, [{"step": 3, "group_id": "g9", "task_id": "t9", "kind": "failed", "why": "x"}])
    rd.truncate_after(2)
    assert [r["step"] for r in rd.read_metrics()] == [1, 2]
    assert [json.loads(line)["task_id"] for line in rd.ledger_path.read_text().splitlines()] == ["t1", "t2"]
    assert rd.drops_path.read_text() == ""


def test_truncate_after_without_ledger_or_drops(tmp_path):
    rd = RunDir.create(tmp_path / "run")
    rd.append_jsonl(rd.metrics_path, [{"step": 1, "loss": float("nan")}])  # NaN is written as null
    rd.truncate_after(0)
    assert rd.read_metrics() == [] and not rd.ledger_path.exists()
