"""`peirce solve`: answer each puzzle of a JSONL file with the task's own solver.

Lines are read by the loop in peirce.cli.jsonl: one output line per input line, a bad
line reported and skipped, the rest still solved.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from peirce.cli.jsonl import LineError, process_lines, require_str


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "solve",
        help="solve puzzles from a JSONL file with the program solver",
        description=(
            "Read JSON objects, one per line, each with 'puzzle_text' (and 'task' unless --task is "
            "given), and print one line per input: {\"answer\": ...} or {\"error\": ...}. Bad lines "
            "are reported on stderr with their line number; the rest are still solved. Exit 1 if "
            "any line failed."
        ),
        epilog="example: peirce solve --task deduction puzzles.jsonl",
    )
    p.add_argument("--task", help="task family for every line (default: each line's 'task' field)")
    p.add_argument("file", help="JSONL input file, or - for stdin")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from peirce.tasks.base import UnknownTaskError, get_family

    families: dict[str, Any] = {}

    def family_for(name: str):
        if name not in families:
            families[name] = get_family(name)
        return families[name]

    if args.task is not None:
        try:
            family_for(args.task)
        except UnknownTaskError as exc:
            print(f"peirce solve: error: --task: {exc}", file=sys.stderr)
            return 1

    def handle(record: dict[str, Any]) -> dict[str, Any]:
        name = args.task if args.task is not None else require_str(record, "task")
        puzzle_text = require_str(record, "puzzle_text")
        try:
            family = family_for(name)
        except UnknownTaskError as exc:
            raise LineError(f"field 'task': {exc}") from None
        try:
            return {"answer": family.solve(puzzle_text)}
        except ValueError as exc:
            raise LineError(f"field 'puzzle_text': cannot solve: {exc}") from None

    return process_lines("solve", args.file, handle)
