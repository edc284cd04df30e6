"""`peirce solve`: answer each puzzle of a JSONL file with the task's own solver.

Lines are read by the loop in peirce.cli.jsonl: one output line per input line, a bad
line reported and skipped, the rest still solved. `--worked` adds the family's worked
solution (what a model should write after the pre-filled `<think>`), phrased as
`peirce generate --worked` phrases it unless `--variant` fixes one phrasing.
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
            "any line failed. With --worked: {\"answer\", \"worked_solution\"}."
        ),
        epilog="example: peirce solve --task deduction puzzles.jsonl",
    )
    p.add_argument("--task", help="task family for every line (default: each line's 'task' field)")
    p.add_argument("--worked", action="store_true",
                   help="also print the worked solution: trace, </think>, <answer> (deduction, induction, abduction)")
    p.add_argument("--variant", type=int, metavar="N",
                   help="with --worked: one phrasing N (0..variants-1) for every step, instead of the "
                   "per-puzzle phrasing `peirce generate --worked` writes")
    p.add_argument("file", help="JSONL input file, or - for stdin")
    p.set_defaults(handler=run)
    return p


def _check_worked(family: Any, variant: int | None) -> None:
    """LineError unless `family` has worked solutions (and phrasing `variant`, if given)."""
    if family.worked_variants == 0:
        raise LineError(f"--worked: task {family.name!r} has no worked solutions "
                        "(only deduction, induction and abduction do)")
    if variant is not None and not 0 <= variant < family.worked_variants:
        raise LineError(f"--variant must be within 0..{family.worked_variants - 1} for {family.name}, got {variant}")


def worked_solution(family: Any, record: dict[str, Any], puzzle_text: str, variant: int | None) -> str:
    from peirce.tasks.base import Task
    from peirce.tasks.dataset import DatasetError, worked_completion

    try:
        if variant is not None:
            return family.worked_solution(puzzle_text, variant=variant)
        task = Task(id=str(record.get("id", "")), family=family.name, level=0, split="", puzzle={},
                    puzzle_text=puzzle_text, solution_text="")
        return worked_completion(task)  # the phrasing generate --worked draws for this puzzle
    except (ValueError, DatasetError) as exc:
        raise LineError(f"field 'puzzle_text': no worked solution: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from peirce.tasks.base import UnknownTaskError, get_family

    families: dict[str, Any] = {}

    def family_for(name: str):
        if name not in families:
            families[name] = get_family(name)
        if args.worked:
            _check_worked(families[name], args.variant)
        return families[name]

    if args.variant is not None and not args.worked:
        print("peirce solve: error: --variant needs --worked", file=sys.stderr)
        return 1
    if args.task is not None:
        try:
            family_for(args.task)
        except (UnknownTaskError, LineError) as exc:
            print(f"peirce solve: error: {'' if isinstance(exc, LineError) else '--task: '}{exc}", file=sys.stderr)
            return 1

    def handle(record: dict[str, Any]) -> dict[str, Any]:
        name = args.task if args.task is not None else require_str(record, "task")
        puzzle_text = require_str(record, "puzzle_text")
        try:
            family = family_for(name)
        except UnknownTaskError as exc:
            raise LineError(f"field 'task': {exc}") from None
        try:
            result = {"answer": family.solve(puzzle_text)}
        except ValueError as exc:
            raise LineError(f"field 'puzzle_text': cannot solve: {exc}") from None
        if args.worked:
            result["worked_solution"] = worked_solution(family, record, puzzle_text, args.variant)
        return result

    return process_lines("solve", args.file, handle)
