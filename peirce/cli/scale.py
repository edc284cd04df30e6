"""`peirce scale RUN rollout=N reward=M`: resize a live run's worker pools."""

from __future__ import annotations

import argparse

from peirce.cli.control_call import print_control_reply


def _parse_assignments(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("rollout", "reward"):
            raise SystemExit(f"peirce scale: expected rollout=N or reward=M, got {item!r}")
        try:
            out[key] = int(value)
        except ValueError:
            raise SystemExit(f"peirce scale: {key} must be an integer, got {value!r}") from None
    return out


def _handle(args: argparse.Namespace) -> int:
    from peirce.trainer.control import ControlRequest, scale, send_control

    if args.assignments:
        roles = _parse_assignments(args.assignments)
        return print_control_reply("scale", lambda: scale(args.run, **roles, timeout_s=args.timeout))
    return print_control_reply("scale", lambda: send_control(args.run, ControlRequest(op="status"), args.timeout))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scale",
        help="Add or remove rollout/reward workers of a running job (no restart).",
        description="Resize the worker pools of a live run. New rollout workers get the current weights "
        "before taking work; removed workers drain first. Without assignments, prints the run's status.",
    )
    p.add_argument("run", help="the run directory of the live run")
    p.add_argument("assignments", nargs="*", metavar="ROLE=N", help="rollout=N and/or reward=M")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the run to apply it")
    p.set_defaults(handler=_handle)
