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
    "meta_score",  # peirce meta-score
    "train",
    "sft",
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
    for name in VERBOSE_COMMANDS:
        if name in sub.choices:
            sub.choices[name].add_argument(
                "--verbose", action=_Verbose, nargs=0, default=False,
                help="also print vLLM, Ray and DeepSpeed output (by default it goes to <run_dir>/logs/)")
    return parser


# Commands that start Ray actors, whose library output goes to <run_dir>/logs/ unless --verbose.
VERBOSE_COMMANDS = ("train", "run")


class _Verbose(argparse.Action):
    """--verbose: set PEIRCE_VERBOSE=1 at parse time, so ensure_ray and every actor see it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from peirce.actors.runtime import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
        setattr(namespace, self.dest, True)


class _ConsoleHandler(logging.StreamHandler):
    """stderr, through tqdm.write while tqdm is loaded, so a line never lands inside a progress bar.

    The stream is whatever sys.stderr is *now* (as logging.lastResort does): a handler that
    kept the stderr of its first `main()` wrote to a closed file once that stream was
    replaced (pytest's capture, a redirected stderr)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it
        pass

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")
        if tqdm is None:
            return super().emit(record)
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS name: message`; WARNING and above are labelled, so they stand out."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        label = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        return f"{record.asctime} {label}{record.name}: {record.message}"


def configure_logging() -> None:
    """peirce's own messages (stage skipped, worker added, ...) on stderr; PEIRCE_LOG_LEVEL
    changes the level. Only the `peirce` logger here: library loggers are routed to the run
    directory by peirce.actors.runtime (ensure_ray, attach_run_log) unless --verbose."""
    level = os.environ.get("PEIRCE_LOG_LEVEL", "INFO").upper()
    logger = logging.getLogger("peirce")
    if logger.handlers:
        return
    handler = _ConsoleHandler()
    handler.setFormatter(_ConsoleFormatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
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
