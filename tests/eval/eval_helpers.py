"""Helpers shared by the eval tests (imported as a plain module, like transport_helpers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


GPQA_ROWS = [
    {"Record ID": f"rec{i}", "Question": f"Which particle is number {i}?", "Correct Answer": f"right {i}",
     "Incorrect Answer 1": f"wrong a{i}", "Incorrect Answer 2": f"wrong b{i}", "Incorrect Answer 3": f"wrong c{i}",
     "High-level domain": "Physics"}
    for i in range(12)
]


def make_result(model: str, metrics: dict[str, dict[str, float]], n: int = 1):
    """An EvalResult with the given per-suite metrics (as `evaluate` would save it)."""
    from peirce.eval.runner import EvalResult, EvalSettings, SuiteResult

    temperature = 0.0 if n == 1 else 1.0
    suites = {name: SuiteResult(suite=name, tasks=10, samples=10 * n, metrics=m, mean_reward=0.0, format_rate=1.0,
                                truncated_rate=0.0, reward_errors=0) for name, m in metrics.items()}
    return EvalResult(model=model, settings=EvalSettings(n=n, temperature=temperature, k_values=(1,)), suites=suites,
                      samples_path=None, seconds=1.0)
