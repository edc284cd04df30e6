"""`peirce stop RUN`: graceful stop of a live run (drain, checkpoint; resumable)."""

from __future__ import annotations

import argparse
import json
import sys


def _handle(args: argparse.Namespace) -> int:
    from peirce.trainer.control import ControlError, stop

    try:
        state = stop(args.run, timeout_s=args.timeout)
    except ControlError as exc:
        print(f"peirce stop: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=2, sort_keys=True))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stop", help="Stop a live run gracefully (it trains what it admitted, then checkpoints).",
                       description="No new rollouts start; samples already admitted are generated, scored and "
                       "trained; a checkpoint is written. Continue later with `peirce train --resume RUN`.")
    p.add_argument("run", help="the run directory of the live run")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(handler=_handle)
