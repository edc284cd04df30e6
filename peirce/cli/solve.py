"""`peirce solve`: answer each puzzle of a JSONL file with the task's own solver.

Also holds the line loop shared with `peirce score`: one bad line never stops the rest.
Each non-blank input line gives exactly one output line (a result or `{"error": ...}`),
so outputs stay aligned with inputs; errors also go to stderr as `FILE:LINE: message`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any, Callable


class LineError(ValueError):
    """A problem with one input line; the message names the field."""


def require_str(record: dict[str, Any], field: str, *, allow_int: bool = False) -> str:
    if field not in record:
        raise LineError(f"missing field {field!r}")
    value = record[field]
    if isinstance(value, str):
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise LineError(f"field {field!r} must be a string, got {type(value).__name__}")


def open_input(path: str) -> IO[str]:
    return sys.stdin if path == "-" else open(path, encoding="utf-8")


def process_lines(
    command: str, path: str, handle: Callable[[dict[str, Any]], dict[str, Any]], out: IO[str] = sys.stdout
) -> int:
    """Apply `handle` to each JSON object line; return 0 when all succeeded, else 1."""
    failed = 0
    try:
        fh = open_input(path)
    except OSError as exc:
        print(f"peirce {command}: error: cannot read {path!r}: {exc.strerror}", file=sys.stderr)
        return 1
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LineError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
                if not isinstance(record, dict):
                    raise LineError(f"expected a JSON object, got {type(record).__name__}")
                result = handle(record)
            except (LineError, KeyError, ValueError) as exc:
                failed += 1
                msg = f"{path}:{lineno}: {exc}"
                print(f"peirce {command}: error: {msg}", file=sys.stderr)
                result = {"error": msg}
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 1 if failed else 0


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
