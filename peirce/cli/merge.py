"""`peirce merge CONFIG.yaml [key=value ...] --out DIR`: Stage B, specialists -> one model.

stdout carries only the merged folder's path, so `$(peirce merge ...)` works in scripts;
errors go to stderr (exit 2 for a bad config or input folder, 1 if the merge itself fails).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge specialist models with mergekit (linear, task_arithmetic, ties)",
        description=(
            "Merge local HF folders with mergekit on CPU. CONFIG.yaml holds method, models "
            "(name: folder), weights (default deduction 1.0, induction 0.2, abduction 0.1; linear "
            "normalises them to 0.769/0.154/0.077 unless normalize=false), base_model (task_arithmetic, "
            "ties), density (ties) and dtype. Overrides use dotted keys, e.g. weights.induction=0.5."
        ),
        epilog="example: peirce merge configs/merge.yaml models.deduction=runs/ded/final --out runs/merged",
    )
    p.add_argument("config", help="merge YAML config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    p.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(handler=_handle)


def _with_default_weights(config: str, overrides: list[str]) -> list[str]:
    """`weights.induction=0.5` on a config without `weights` changes one reference weight
    (instead of replacing all three by a one-entry mapping)."""
    import yaml

    from peirce.merge import REFERENCE_WEIGHTS

    if not any(o.startswith("weights.") for o in overrides):
        return overrides
    try:
        data = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError):
        return overrides  # load_config reports the problem
    if isinstance(data, dict) and "weights" not in data:
        return [f"weights.{k}={v}" for k, v in REFERENCE_WEIGHTS.items()] + overrides
    return overrides


def _handle(args: argparse.Namespace) -> int:
    from peirce.config import ConfigError, load_config
    from peirce.merge import MergeConfig, MergeError, run_merge
    from peirce.merge.merge import resolve_inputs

    try:
        cfg = load_config(MergeConfig, args.config, _with_default_weights(args.config, list(args.overrides)))
        resolve_inputs(cfg)  # a missing folder is a usage error, reported before mergekit loads
    except (ConfigError, MergeError) as exc:
        print(f"peirce merge: {exc}", file=sys.stderr)
        return 2
    try:
        out = run_merge(cfg, args.out, overwrite=args.overwrite)
    except MergeError as exc:
        print(f"peirce merge: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
