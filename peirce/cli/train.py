"""`peirce train CONFIG.yaml key.sub=value ...` and `peirce train --resume RUN`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _handle(args: argparse.Namespace) -> int:
    from peirce.config import ConfigError, TrainConfig, load_config

    config_path = args.config
    overrides = list(args.overrides)
    if args.resume:
        config_path = str(Path(args.resume) / "config.yaml")
        if args.config and "=" in args.config:  # `peirce train --resume RUN a.b=c` puts a.b=c here
            overrides.insert(0, args.config)
        overrides.append(f"run_dir={args.resume}")
    if config_path is None:
        print("peirce train: give CONFIG.yaml or --resume RUN", file=sys.stderr)
        return 2
    try:
        cfg = load_config(TrainConfig, config_path, overrides)
    except ConfigError as exc:
        print(f"peirce train: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"config OK: {cfg.name}")
        return 0
    from peirce.actors.runtime import ensure_ray
    from peirce.trainer.orchestrator import Orchestrator

    ensure_ray()
    result = Orchestrator(cfg, resume=bool(args.resume), progress=not args.no_progress).run()
    print(f"peirce train: {cfg.name} finished at step {result['step']}; run directory {result['run_dir']}")
    if result["step"] == 0:
        print(f"peirce train: {cfg.name} trained nothing (see run_summary.json's ended_early)", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="Run one RL job (a specialist or domain RL) from a YAML config.",
        description="Train with asynchronous RL. Overrides use dotted keys, e.g. rollout.workers=2 "
        "async.max_staleness=0. --resume RUN continues a stopped run from its latest checkpoint.",
    )
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    p.add_argument("--resume", metavar="RUN", help="run directory to continue")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check", action="store_true",
                   help="validate the config and overrides (names, ranges, paths), print 'config OK: NAME', run nothing")
    p.set_defaults(handler=_handle)
