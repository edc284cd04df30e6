"""Standard benchmark files (given by local path) as peirce Tasks for the right reward.

| format        | family  | rows                                                                  |
|---------------|---------|-----------------------------------------------------------------------|
| math500       | math    | problem, answer (unique_id optional)                                  |
| aime, amc     | math    | problem or question, answer (any case: AIME 1983-2024 has Question/Answer) |
| gpqa          | science | Question, Correct Answer, Incorrect Answer 1..3 (csv)                 |
| mbpp          | code    | text, test_list, code (test_setup_code optional)                      |
| livecodebench | code    | question_content, public_test_cases (JSON string), starter_code, metadata |

Files may be .jsonl, .json (a list), .csv or .parquet. Nothing is downloaded.

GPQA's choices are shuffled per question by a hash of (seed, question), so the gold
letter is uniform over A-D yet the same on every run and machine.

LiveCodeBench "functional" cases (LeetCode style) become asserts on `Solution().<fn>`.
"stdin" cases become the code reward's `stdin_cases`: the answer's program runs once per
case with the case's input on stdin, and its stdout is compared (lines, trailing spaces
ignored) outside the sandbox.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peirce.tasks.base import Task
from peirce.tasks.domain import code_task, math_task, science_task


class BenchmarkFileError(ValueError):
    """A benchmark file cannot be read as its format; the message names path, row and field."""


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (list of objects), .csv or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkFileError(f"path={str(path)!r}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    if suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise BenchmarkFileError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BenchmarkFileError(f"{path}: a .json benchmark file must hold a list of objects")
        return data
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkFileError(f"{path}:{lineno}: not JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise BenchmarkFileError(f"{path}:{lineno}: must be a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    raise BenchmarkFileError(f"path={str(path)!r}: suffix {path.suffix!r} is not one of .jsonl .json .csv .parquet")


def _field(row: dict[str, Any], where: str, *names: str, required: bool = True) -> Any:
    """The first non-empty of `names`, matched case-insensitively."""
    lower = {str(k).strip().lower(): v for k, v in row.items()}
    for name in names:
        v = lower.get(name.lower())
        if v not in (None, "", []):
            return v
    if required:
        raise BenchmarkFileError(f"{where}: missing field {' or '.join(repr(n) for n in names)} "
                                 f"(row has {sorted(row)[:12]})")
    return None


def _answer_text(value: Any) -> str:
    """27.0 -> "27" (AMC files store integers as floats); other values as written."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _slug(value: Any) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(value)).strip("-") or "x"


# ---------------------------------------------------------------- math


def _math_loader(fmt: str) -> Callable[[list[dict[str, Any]], Path, int], list[Task]]:
    def load(rows: list[dict[str, Any]], path: Path, seed: int) -> list[Task]:
        tasks = []
        for i, row in enumerate(rows):
            where = f"{path}: row {i}"
            problem = _field(row, where, "problem", "question")
            answer = _field(row, where, "answer")
            key = _field(row, where, "unique_id", "id", required=False)
            tid = f"{fmt}-{_slug(key) if key is not None else f'{i:05d}'}"
            tasks.append(math_task(str(problem), _answer_text(answer), id=tid, split="test"))
        return tasks

    return load


# ---------------------------------------------------------------- science


def _shuffle_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"peirce-gpqa|{seed}|{key}".encode()).digest()[:8], "big")


def _gpqa(rows: list[dict[str, Any]], path: Path, seed: int) -> list[Task]:
    tasks = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        question = str(_field(row, where, "Question")).strip()
        correct = str(_field(row, where, "Correct Answer")).strip()
        wrong = [str(_field(row, where, f"Incorrect Answer {j}")).strip() for j in (1, 2, 3)]
        choices = [correct, *wrong]
        random.Random(_shuffle_seed(seed, question)).shuffle(choices)
        letter = chr(65 + choices.index(correct))
        key = _field(row, where, "Record ID", "id", required=False)
        tid = f"gpqa-{_slug(key) if key is not None else f'{i:05d}'}"
        tasks.append(science_task(question, choices, letter, id=tid, split="test"))
    return tasks


# ---------------------------------------------------------------- code


def _list_field(value: Any, where: str, name: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BenchmarkFileError(f"{where}: field {name!r} is a string but not a JSON list") from None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise BenchmarkFileError(f"{where}: field {name!r} must be a non-empty list of strings, got {value!r:.120}")
    return value


def _mbpp(rows: list[dict[str, Any]], path: Path, seed: int) -> list[Task]:
    tasks = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        text = _field(row, where, "text", "prompt")
        tests = _list_field(_field(row, where, "test_list"), where, "test_list")
        key = _field(row, where, "task_id", required=False)
        tid = f"mbpp-{_slug(key) if key is not None else f'{i:05d}'}"
        tasks.append(code_task(str(text), tests, id=tid, split="test",
                               reference_solution=str(_field(row, where, "code", required=False) or ""),
                               setup=str(_field(row, where, "test_setup_code", required=False) or "")))
    return tasks


# Names LeetCode-style solutions use without importing them (LiveCodeBench's own prelude does the same).
_FUNCTIONAL_SETUP = (
    "from typing import *\nimport collections, heapq, math, itertools, bisect, functools, string, re\n"
    "from collections import *\nimport json as _peirce_json\n"
)

def _lcb_cases(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    raw = _field(row, where, "public_test_cases")
    try:
        cases = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(f"{where}: field 'public_test_cases' is not JSON ({exc})") from None
    if not isinstance(cases, list) or not cases:
        raise BenchmarkFileError(f"{where}: field 'public_test_cases' must be a non-empty JSON list")
    for j, c in enumerate(cases):
        if not (isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str)):
            raise BenchmarkFileError(f"{where}: public_test_cases[{j}] needs string 'input' and 'output'")
        if c.get("testtype", "stdin") not in ("stdin", "functional"):
            raise BenchmarkFileError(f"{where}: public_test_cases[{j}].testtype={c.get('testtype')!r}: "
                                     "must be 'stdin' or 'functional'")
    return cases


def _livecodebench(rows: list[dict[str, Any]], path: Path, seed: int) -> list[Task]:
    tasks = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        question = str(_field(row, where, "question_content"))
        cases = _lcb_cases(row, where)
        starter = str(_field(row, where, "starter_code", required=False) or "")
        key = _field(row, where, "question_id", "id", required=False)
        tid = f"livecodebench-{_slug(key) if key is not None else f'{i:05d}'}"
        if all(c.get("testtype", "stdin") == "functional" for c in cases):
            meta = _field(row, where, "metadata", required=False) or {}
            meta = json.loads(meta) if isinstance(meta, str) else meta
            fn = meta.get("func_name") if isinstance(meta, dict) else None
            if not isinstance(fn, str) or not fn.isidentifier():
                raise BenchmarkFileError(f"{where}: functional tests need metadata.func_name, got {fn!r}")
            try:  # one JSON value per line per argument; the output is one JSON value
                args = [[json.loads(a) for a in c["input"].split("\n") if a.strip()] for c in cases]
                for c in cases:
                    json.loads(c["output"])
            except json.JSONDecodeError as exc:
                raise BenchmarkFileError(f"{where}: functional test case is not JSON ({exc})") from None
            checks = {"tests": [f"assert Solution().{fn}(*_peirce_json.loads({json.dumps(a)!r})) == "
                                f"_peirce_json.loads({c['output'].strip()!r})" for a, c in zip(args, cases)]}
            text = f"{question}\n\nComplete this starter code:\n```python\n{starter.rstrip()}\n```"
            setup = _FUNCTIONAL_SETUP
        elif any(c.get("testtype", "stdin") == "functional" for c in cases):
            raise BenchmarkFileError(f"{where}: mixes 'stdin' and 'functional' test cases")
        else:
            text = (f"{question}\n\nWrite a complete program that reads from standard input and writes to "
                    "standard output.")
            checks = {"stdin_cases": [{"input": c["input"], "output": c["output"]} for c in cases]}
            setup = ""
        # Built directly (not by code_task) so the user text shows the question, not a harness call.
        tasks.append(Task(id=tid, family="code", level=1, split="test", puzzle_text=text, solution_text="",
                          puzzle={"prompt": question, **checks, "setup": setup, "entry_point": None,
                                  "reference_solution": "", "starter_code": starter}))
    return tasks


LOADERS: dict[str, Callable[[list[dict[str, Any]], Path, int], list[Task]]] = {
    "math500": _math_loader("math500"),
    "aime": _math_loader("aime"),
    "amc": _math_loader("amc"),
    "gpqa": _gpqa,
    "mbpp": _mbpp,
    "livecodebench": _livecodebench,
}
FORMATS: tuple[str, ...] = tuple(LOADERS)


def load_benchmark_file(path: str | os.PathLike, fmt: str, seed: int = 0) -> list[Task]:
    """Tasks (split "test") from a local benchmark file in format `fmt` (see FORMATS)."""
    if fmt not in LOADERS:
        raise BenchmarkFileError(f"format={fmt!r}: unknown; valid: {', '.join(FORMATS)}")
    rows = read_records(path)
    if not rows:
        raise BenchmarkFileError(f"path={str(path)!r}: no rows")
    tasks = LOADERS[fmt](rows, Path(path), seed)
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise BenchmarkFileError(f"{path}: task id {t.id!r} occurs twice; ids must be unique")
        seen.add(t.id)
    return tasks
