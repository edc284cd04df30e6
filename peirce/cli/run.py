"""`peirce run CONFIG.yaml [key=value ...]`: the whole recipe, resumable."""

from __future__ import annotations

import argparse
import sys


STARTS = {"merged": "[merged]", "base": "[base]", "both": "[merged, base]"}


def pipeline_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides, with `--from` as the stage_c.starts it abbreviates."""
    extra = [f"stage_c.starts={STARTS[args.start]}"] if args.start else []
    return [*args.overrides, *extra]


def _handle(args: argparse.Namespace) -> int:
    from peirce.config import ConfigError, load_config
    from peirce.pipeline.config import PipelineConfig

    from peirce.pipeline.resolve import resolve_all

    try:
        pc = load_config(PipelineConfig, args.config, pipeline_overrides(args))
        resolve_all(pc)  # every stage's TrainConfig, before Ray starts
    except ConfigError as exc:
        print(f"peirce run: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"config OK: {pc.name}")
        return 0
    from peirce.pipeline.preflight import PreflightError, run_preflight

    try:
        print(run_preflight(pc, args.memory_budget_gib), file=sys.stderr)
    except PreflightError as exc:
        print(f"peirce run: not enough memory: {exc}", file=sys.stderr)
        return 2
    from peirce.actors.runtime import ensure_ray
    from peirce.pipeline.runner import StageError, run_pipeline

    ensure_ray()
    try:
        report = run_pipeline(pc)
    except (StageError, ConfigError) as exc:
        print(f"peirce run: {exc}", file=sys.stderr)
        return 1
    from peirce.pipeline.report import SUMMARY

    summary = report.parent / SUMMARY
    if summary.exists():
        print(summary.read_text())
    print(f"peirce run: done; report at {report}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="Run the whole meta-ability recipe: specialists -> merge -> domain RL -> evaluation -> report.",
        description="Stage A trains the deduction, induction and abduction specialists concurrently, stage B "
        "merges them with mergekit, stage C runs domain RL from the merge and from the base model, then every "
        "checkpoint is evaluated and a report (Markdown + PNG plots) is written to the run directory. Re-running "
        "skips completed stages. Overrides use dotted keys, e.g. profile=smoke or stage_b.method=ties.",
    )
    p.add_argument("config", help="pipeline YAML (see configs/default.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--from", dest="start", choices=sorted(STARTS),
                   help="where stage C (domain RL) starts: the merged model, the base model (the baseline), "
                   "or both (the config's stage_c.starts; default both)")
    p.add_argument("--check", action="store_true",
                   help="validate the pipeline config and every stage's resolved run config, print "
                   "'config OK: NAME', run nothing")
    p.add_argument("--memory-budget-gib", type=float, default=None, metavar="GIB",
                   help="memory the run may use (default: what the machine has available now); the run is refused "
                   "before Ray starts when a stage's estimated peak exceeds it")
    p.set_defaults(handler=_handle)
