"""Re-run the CPU reproduction (`configs/reproduce-cpu.yaml`) and print its table as JSON lines.

    python benchmarks/reproduce_cpu.py [--run-dir DIR] [--summarize-only] [--quick]

Up to two hours alone on a 2-core box with native bf16 (run nothing heavy beside it), so it is
not a `bench_*.py`: `run_all.py` would start it. The run is `peirce run`'s, resumable: a second
call on the same --run-dir skips what is complete and only re-reads the results.
`--summarize-only` reads a finished run without starting anything. `--quick` runs the same
stages on the tiny random model (`profile=smoke`, a few minutes) to check the plumbing.

One line per score (pass@1 of every checkpoint on every suite and level it was evaluated on,
with its 95% interval and the base model's score as the baseline), one per verdict the report
draws (`peirce.pipeline.comparisons`: beats only when the intervals do not overlap), the wall
time and the peak memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import emit, parse_args

from peirce.eval.levels import suite_levels
from peirce.eval.runner import RESULTS_FILE, load_result
from peirce.pipeline.comparisons import (Comparison, domain_comparisons, merged_comparisons, score_of,
                                         specialist_comparisons)
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.resolve import specialist_configs
from peirce.pipeline.runner import MEMORY_FILE

BENCH = "reproduce_cpu"
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "reproduce-cpu.yaml"


def load_run(run_dir: Path) -> tuple[PipelineConfig, dict[str, Any]]:
    """The run's resolved pipeline config and every checkpoint's EvalResult (name -> result)."""
    if not (run_dir / "pipeline.yaml").exists():
        raise SystemExit(f"{run_dir}: no pipeline.yaml; is this a `peirce run` directory?")
    pc = PipelineConfig.model_validate(json.loads((run_dir / "pipeline.yaml").read_text()))
    results = {p.parent.name: load_result(p) for p in sorted((run_dir / "eval").glob(f"*/{RESULTS_FILE}"))}
    if not results:
        raise SystemExit(f"{run_dir}: no eval/*/{RESULTS_FILE}; is this a finished `peirce run` directory?")
    return pc, results


def score_records(results: dict[str, Any], metric: str = "pass@1") -> list[dict[str, Any]]:
    """One record per (checkpoint, suite, level): the whole suite, and each level where it holds several."""
    out = []
    base = results.get("base")
    for suite in sorted({s for r in results.values() for s in r.suites}):
        levels = suite_levels(list(results.values()), suite)
        for level in [None, *levels] if len(levels) > 1 else [None]:
            ref = score_of(base, suite, metric, level)
            for name, res in results.items():
                got = score_of(res, suite, metric, level)
                if got is None:
                    continue
                where = suite if level is None else f"{suite}/L{level}"
                out.append({"metric": f"{metric}/{where}/{name}", "value": got.value, "unit": "fraction",
                            "baseline": ref.value if ref is not None and name != "base" else None,
                            "interval": [got.interval.low, got.interval.high] if got.interval else None,
                            "problems": got.tasks})
    return out


def verdict_record(c: Comparison) -> dict[str, Any]:
    where = c.suite if c.level is None else f"{c.suite}/L{c.level}"
    return {"metric": f"verdict/{c.candidate}_vs_{c.reference}/{where}", "value": c.verdict == "beats",
            "unit": "beats", "verdict": c.verdict, "sentence": c.sentence()}


def verdict_records(pc: PipelineConfig, results: dict[str, Any], metric: str = "pass@1") -> list[dict[str, Any]]:
    # each specialist's task families as the pipeline resolved them (stage_a.common may set them)
    specs = {name: list(cfg.tasks.families) for name, cfg in specialist_configs(pc).items()}
    found: list[Comparison] = []
    for by_level in (False, True):
        found += specialist_comparisons(results, specs, pc.eval.suites, metric, by_level=by_level)
        found += merged_comparisons(results, pc.eval.suites, metric, by_level=by_level)[0]
    found += domain_comparisons(results, pc.eval.suites, metric)
    unique = {r["metric"]: r for r in map(verdict_record, found)}  # a one-level suite appears twice
    return list(unique.values())


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    done = run_dir / "DONE"
    if done.exists():
        timings = json.loads(done.read_text())
        out.append({"metric": "wall_time", "value": round(sum(timings.values()), 1), "unit": "s",
                    "stages": {k: round(v, 1) for k, v in timings.items()}})
    memory = run_dir / MEMORY_FILE
    if memory.exists():
        peak = json.loads(memory.read_text())
        out.append({"metric": "peak_machine_memory", "value": round(peak["system_used_gib"], 2), "unit": "GiB",
                    "rss_sum_gib": round(peak["rss_sum_gib"], 2), "total_gib": round(peak["system_total_gib"], 2)})
    return out


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--run-dir", type=Path, default=None, help="default: runs/reproduce-cpu (quick: runs/"
                                                                  "reproduce-cpu-quick)"),
        p.add_argument("--summarize-only", action="store_true", help="read a finished run; start nothing")))
    run_dir = args.run_dir or REPO / "runs" / ("reproduce-cpu-quick" if args.quick else "reproduce-cpu")
    if not args.summarize_only:
        cmd = [sys.executable, "-m", "peirce.cli.main", "run", str(CONFIG), f"run_dir={run_dir}",
               *(["profile=smoke"] if args.quick else [])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        # the run's console (progress, stage lines) goes to stderr, so stdout stays one JSON object per line
        if subprocess.run(cmd, cwd=REPO, env=env, stdout=sys.stderr).returncode != 0:
            return 1
    pc, results = load_run(run_dir)
    for rec in [*run_records(run_dir), *score_records(results), *verdict_records(pc, results)]:
        emit(BENCH, rec.pop("metric"), rec.pop("value"), rec.pop("unit"), rec.pop("baseline", None), **rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
