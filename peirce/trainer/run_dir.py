"""A run directory: resolved config, one metrics line per learner step, checkpoints.

Layout::

    <run>/config.yaml            resolved config (defaults filled in)
    <run>/metrics.jsonl          one JSON object per learner step
    <run>/ledger.jsonl           one line per trained group: step, group_id, task_id
    <run>/drops.jsonl            one line per group that left untrained: step, group_id,
                                 task_id, kind (failed / stale / filtered / gated), why
    <run>/run_summary.json       rewritten every step: learning-signal and weight-sync health
                                 (`no_signal`, ...), how the run stopped; what a report reads
    <run>/logs/                  third-party (vLLM, Ray, DeepSpeed) chatter kept off the console
    <run>/tensorboard/, wandb/   optional trackers (trainer.loggers)
    <run>/control.json           endpoint of the live run's control socket (peirce scale)
    <run>/checkpoints/step-000010/   an HF folder (transformers/vLLM/mergekit load it) that
                                     also holds optimizer, RNG and driver state
    <run>/checkpoints/latest     name of the newest complete checkpoint
    <run>/DONE                   written when the run finished
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a null is honest and parseable
    if hasattr(value, "item"):
        return _jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def create(cls, root: str | Path) -> "RunDir":
        path = Path(root)
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def drops_path(self) -> Path:
        return self.root / "drops.jsonl"

    def append_jsonl(self, path: Path, rows: list[dict[str, Any]]) -> None:
        with path.open("a") as fh:
            fh.writelines(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in rows)

    @property
    def control_path(self) -> Path:
        return self.root / "control.json"

    @property
    def summary_path(self) -> Path:
        return self.root / "run_summary.json"

    @property
    def logs_path(self) -> Path:
        return self.root / "logs"

    @property
    def done_path(self) -> Path:
        return self.root / "DONE"

    def checkpoint_path(self, step: int) -> Path:
        return self.root / "checkpoints" / f"step-{step:06d}"

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace run_summary.json atomically (a reader never sees half a file)."""
        tmp = self.summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(summary), indent=2, sort_keys=True) + "\n")
        tmp.rename(self.summary_path)

    def read_summary(self) -> dict[str, Any] | None:
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else None

    @staticmethod
    def read_jsonl(path: Path) -> list[dict[str, Any]]:
        """Every row of one of the run's JSON-lines files ([] when it does not exist yet)."""
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def read_metrics(self) -> list[dict[str, Any]]:
        return self.read_jsonl(self.metrics_path)

    def truncate_after(self, step: int) -> None:
        """On resume, drop the metrics, ledger and drop lines of steps after the checkpoint:
        they will be redone. (A learner killed while saving step N leaves N's lines behind
        a checkpoint of N-1; kept, the redone step would list its tasks twice.)"""
        for path in (self.metrics_path, self.ledger_path, self.drops_path):
            if path.exists():
                rows = self.read_jsonl(path)
                path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows if r.get("step", 0) <= step))

    def mark_latest(self, step: int) -> None:
        latest = self.root / "checkpoints" / "latest"
        tmp = latest.with_suffix(".tmp")
        tmp.write_text(self.checkpoint_path(step).name)
        tmp.rename(latest)

    def latest_checkpoint(self) -> Path | None:
        latest = self.root / "checkpoints" / "latest"
        if not latest.exists():
            return None
        path = self.root / "checkpoints" / latest.read_text().strip()
        return path if path.exists() else None

    def model_dir(self) -> Path | None:
        """The newest checkpoint, itself an HF folder (what merge and eval consume)."""
        return self.latest_checkpoint()
