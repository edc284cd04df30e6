"""The `peirce` command line.

Each subcommand lives in its own module `peirce.cli.<name>` exposing
`add_parser(subparsers)`; heavy libraries are imported only inside the command's
handler so `peirce --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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


def configure_logging() -> None:
    """peirce's own messages (stage skipped, worker added, ...) on stderr; PEIRCE_LOG_LEVEL
    changes the level. Only the `peirce` logger: libraries keep their own settings."""
    level = os.environ.get("PEIRCE_LOG_LEVEL", "INFO").upper()
    logger = logging.getLogger("peirce")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here at the latest, while we can still catch it
        return code
    except BrokenPipeError:
        # `peirce solve F | head`: the reader is gone. Point stdout at /dev/null so the flush at
        # interpreter exit cannot raise again, and exit 1 without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":
    sys.exit(main())
