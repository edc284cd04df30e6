"""`peirce sft CONFIG.yaml [key=value ...]`: supervised training on worked solutions."""

from __future__ import annotations

import argparse
import sys


def _handle(args: argparse.Namespace) -> int:
    from peirce.config import ConfigError, load_config
    from peirce.sft.config import SFTConfig

    try:
        cfg = load_config(SFTConfig, args.config, list(args.overrides))
    except ConfigError as exc:
        print(f"peirce sft: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"config OK: {cfg.name}")
        return 0
    from peirce.sft.examples import SFTDataError
    from peirce.sft.loop import run_sft

    try:
        summary = run_sft(cfg, progress=not args.no_progress)
    except SFTDataError as exc:
        print(f"peirce sft: {exc}", file=sys.stderr)
        return 1
    print(f"peirce sft: {cfg.name}: {summary.steps} steps on {summary.examples} examples, loss "
          f"{summary.first_loss:.3f} -> {summary.last_loss:.3f}; model at {summary.model_dir}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="Supervised warm start on worked solutions of generated puzzles (an HF checkpoint RL can start from).",
        description="Generate train-split puzzles of the given families and levels, render each prompt exactly as "
        "rollout does, and train on the family's worked solution (trace, </think>, answer, EOS; loss on those "
        "tokens only). Writes <run_dir>/metrics.jsonl (sft_loss per step) and <run_dir>/checkpoints/step-N, a "
        "Hugging Face folder that peirce train (model.path=...), merge and eval load. Overrides are dotted "
        "keys, e.g. lr=1e-4 examples=64 families=[induction] model=tiny.",
    )
    p.add_argument("config", help="SFT YAML (see configs/sft.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check", action="store_true", help="validate the config, print 'config OK: NAME', run nothing")
    p.set_defaults(handler=_handle)
