"""`peirce stop RUN`: graceful stop of a live run (drain, checkpoint; resumable)."""

from __future__ import annotations

import argparse

from peirce.cli.control_call import print_control_reply


def _handle(args: argparse.Namespace) -> int:
    from peirce.trainer.control import stop

    return print_control_reply("stop", lambda: stop(args.run, timeout_s=args.timeout))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stop", help="Stop a live run gracefully (it trains what it admitted, then checkpoints).",
                       description="No new rollouts start; samples already admitted are generated, scored and "
                       "trained; a checkpoint is written. Continue later with `peirce train --resume RUN`.")
    p.add_argument("run", help="the run directory of the live run")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(handler=_handle)
