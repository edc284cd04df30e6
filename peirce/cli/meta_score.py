"""`peirce meta-score`: the MASA meta reward of meta responses against their scored solutions."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

DESCRIPTION = (
    "Read JSON objects, one per line: {\"problem\", \"meta_response\", \"solutions\": [{\"response\", \"correct\", "
    "\"length\"}, ...], \"k\"} (k optional, default --k). Print one line per input: {\"reward\", \"length\", "
    "\"pass_rate\", \"notions\", \"parsed\"} -- the meta reward, its three parts (each in [0, 1]) and the parsed "
    "prediction -- or {\"error\": ...}. Bad lines are reported on stderr with their line number; exit 1 if any "
    "line failed."
)
MAX_SOLUTIONS = 4096


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("meta-score", help="score MASA meta responses from a JSONL file", description=DESCRIPTION,
                       epilog="example: peirce meta-score predictions.jsonl")
    p.add_argument("--k", type=int, default=8, help="pass_rate scale for lines without 'k' (default 8)")
    p.add_argument("--base", type=float, default=0.01, help="pass-rate reward base b in (0, 1) (default 0.01)")
    p.add_argument("file", help="JSONL input file, or - for stdin")
    p.set_defaults(handler=run)
    return p


def _k(value: Any, where: str) -> int:
    if type(value) is not int or not 1 <= value <= 1000:
        raise ValueError(f"{where} must be an integer within 1..1000, got {value!r:.50}")
    return value


def _solutions(record: dict[str, Any]) -> list:
    from peirce.cli.jsonl import LineError
    from peirce.masa.types import Solution

    if "solutions" not in record:
        raise LineError("missing field 'solutions'")
    items = record["solutions"]
    if not isinstance(items, list) or len(items) > MAX_SOLUTIONS:
        raise LineError(f"field 'solutions' must be a list of at most {MAX_SOLUTIONS} objects, "
                        f"got {type(items).__name__}" + (f" of {len(items)}" if isinstance(items, list) else ""))
    out = []
    for i, item in enumerate(items):
        where = f"solutions[{i}]"
        if not isinstance(item, dict):
            raise LineError(f"{where} must be an object, got {type(item).__name__}")
        response, correct, length = item.get("response"), item.get("correct"), item.get("length")
        if not isinstance(response, str):
            raise LineError(f"{where}.response must be a string, got {type(response).__name__}")
        if not isinstance(correct, bool):
            raise LineError(f"{where}.correct must be true or false, got {type(correct).__name__}")
        if type(length) is not int or length < 0:
            raise LineError(f"{where}.length must be an integer >= 0 (tokens), got {length!r:.50}")
        out.append(Solution(response=response, correct=correct, length=length))
    return out


def run(args: argparse.Namespace) -> int:
    import msgspec

    from peirce.cli.jsonl import LineError, process_lines, require_str
    from peirce.masa.reward import score_response

    try:
        default_k = _k(args.k, "--k")
        if not (math.isfinite(args.base) and 0 < args.base < 1):
            raise ValueError(f"--base must be within (0, 1), got {args.base}")
    except ValueError as exc:
        print(f"peirce meta-score: error: {exc}", file=sys.stderr)
        return 1

    def handle(record: dict[str, Any]) -> dict[str, Any]:
        problem = require_str(record, "problem")
        response = require_str(record, "meta_response")
        try:
            k = _k(record["k"], "field 'k'") if "k" in record else default_k
        except ValueError as exc:
            raise LineError(str(exc)) from None
        prediction, reward = score_response(response, problem, _solutions(record), k=k, base=args.base)
        parsed = msgspec.to_builtins(prediction)
        parsed.pop("reasoning", None)  # the response's own text: the caller has it
        return {"reward": reward.reward, "length": reward.length, "pass_rate": reward.pass_rate,
                "notions": reward.notions, "parsed": parsed}

    return process_lines("meta-score", args.file, handle)
