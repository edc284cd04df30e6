"""The `peirce` command line.

Each subcommand lives in its own module `peirce.cli.<name>` exposing
`add_parser(subparsers)`; heavy libraries are imported only inside the command's
handler so `peirce --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order shown in --help.
COMMANDS: tuple[str, ...] = (
    "doctor",
    "model",
    "generate",
    "solve",
    "score",
    "train",
    "scale",
    "stop",
    "merge",
    "eval",
    "run",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peirce",
        description="Asynchronous RL for language models: meta-ability alignment, merge, domain RL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"peirce.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"peirce.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
