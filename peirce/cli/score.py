"""`peirce score`: score responses against gold answers with a registered reward.

`--reward auto` (the default) picks each line's reward exactly as a training run's
reward workers do (peirce.rewards.worker.RewardResolver): maa for the meta-ability
tasks, the family's own reward (math, code, science, ...) otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score",
        help="score model responses from a JSONL file",
        description=(
            "Read JSON objects, one per line, with 'puzzle_text', 'solution_text' and 'response' (the "
            "whole assistant turn, including a pre-filled <think>; see --prefill), plus 'task' unless "
            "--task is given. Print one line per input: {\"reward\", \"format_ok\", \"correct\"} or "
            "{\"error\": ...}. Bad lines are reported on stderr with their line number; exit 1 if any "
            "line failed."
        ),
        epilog="example: peirce score --task induction responses.jsonl",
    )
    p.add_argument("--task", help="task family for every line (default: each line's 'task' field)")
    p.add_argument("--reward", default="auto",
                   help="registered reward name, or auto (default): maa for deduction/induction/abduction, the "
                   "task's own reward (math, code, science) otherwise -- the rule training uses")
    p.add_argument(
        "--prefill",
        default="",
        help="text to prepend to every response, e.g. '<think>' when responses are bare completions",
    )
    p.add_argument("file", help="JSONL input file, or - for stdin")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from peirce.cli.jsonl import LineError, process_lines, require_str
    from peirce.rewards.registry import UnknownRewardError
    from peirce.rewards.worker import RewardResolver
    from peirce.tasks.base import Task, UnknownTaskError, get_family

    reward_for = RewardResolver(args.reward)
    if args.reward != "auto":
        try:
            reward_for("")  # a named reward is the same for every task: check it now
        except UnknownRewardError as exc:
            print(f"peirce score: error: --reward: {exc}", file=sys.stderr)
            return 1
    known: set[str] = set()

    def check_task(name: str, where: str) -> None:
        if name not in known:
            try:
                get_family(name)
            except UnknownTaskError as exc:
                raise LineError(f"{where}: {exc}") from None
            known.add(name)

    if args.task is not None:
        try:
            check_task(args.task, "--task")
        except LineError as exc:
            print(f"peirce score: error: {exc}", file=sys.stderr)
            return 1

    def handle(record: dict[str, Any]) -> dict[str, Any]:
        name = args.task if args.task is not None else require_str(record, "task")
        check_task(name, "field 'task'")
        level = record.get("level")
        task = Task(
            id=str(record.get("id", "")),
            family=name,
            level=level if isinstance(level, int) and not isinstance(level, bool) else 0,
            split=str(record.get("split", "")),
            puzzle=record["puzzle"] if isinstance(record.get("puzzle"), dict) else {},  # domain rewards may need it
            puzzle_text=require_str(record, "puzzle_text"),
            solution_text=require_str(record, "solution_text", allow_int=True),
        )
        try:
            reward_fn = reward_for(name)
        except UnknownRewardError as exc:
            raise LineError(f"task {name!r} has no reward of its own ({exc}); pass --reward") from None
        result = reward_fn(task, args.prefill + require_str(record, "response"))
        return {"reward": result.reward, "format_ok": result.format_ok, "correct": result.correct}

    return process_lines("score", args.file, handle)
