"""Deterministic, deduplicated, split-disjoint puzzle sets and their files.

Why splits are assigned by hash: the released MAA test sets overlap their train sets
(75 and 68 of 100 puzzles at induction L1/L2) because each split was drawn separately.
Here every candidate's split is a pure function of its canonical text (sha256), and a
split keeps only candidates that hash into it, so no puzzle can be in two splits, for
any `n`, `seed` or level. Candidate `k` is drawn from `random.Random(seed_k)` with
`seed_k` derived by sha256 (never `hash()`, which is salted per process), so a set is
the same on every machine, and `Task.seed` regenerates that one puzzle.

Files: verl `RLHFDataset` parquet (the layout of the released MAA files plus peirce
columns id/task/level/puzzle/seed) and JSONL (one `Task` per line). `read_tasks` reads
both and the released reference parquet files. With `worked=True` the writers add a
`worked_solution` column: the family's worked completion (trace, `</think>`, answer) for
a supervised warm start, its phrasing drawn from a hash of the task (stable per puzzle).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import msgspec

from peirce.tasks.base import NoWorkedSolutionError, Task, TaskFamily, UnknownTaskError, family_names, get_family
from peirce.tasks.prompts import PROMPT_STYLES, TASK_INSTRUCTIONS, chat_messages, render_prompt

# Changing these re-assigns puzzles to splits: treat them as part of the data format.
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.90, "val": 0.05, "test": 0.05}
DATA_SOURCE = "logic_assignment"  # what the released files use; verl routes rewards on it
ABILITY = "logic"


class DatasetError(ValueError):
    pass


class PuzzleSpaceExhausted(DatasetError):
    """Fewer than `n` unique puzzles of this split exist (or were found within `patience`)."""

    def __init__(self, message: str, found: int, n: int):
        super().__init__(message)
        self.found, self.n = found, n


def canonical_text(puzzle_text: str) -> str:
    """Whitespace-insensitive form used for de-duplication and split assignment."""
    return " ".join(puzzle_text.split())


def split_of(family: str, puzzle_text: str, fractions: dict[str, float] = SPLIT_FRACTIONS) -> str:
    """The one split a puzzle belongs to, from a stable hash of task + canonical text.

    The level is deliberately left out, so a text generated at two levels still lands
    in one split."""
    return _split_of_key(family, canonical_text(puzzle_text), fractions)


def _split_of_key(family: str, key: str, fractions: dict[str, float]) -> str:
    digest = hashlib.sha256(f"{family}\n{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    acc = 0.0
    for name, frac in fractions.items():
        acc += frac
        if u < acc:
            return name
    return name  # rounding: u within float error of 1.0


def derive_seed(family: str, level: int, seed: int, k: int) -> int:
    """Seed of candidate `k`: platform- and process-independent."""
    digest = hashlib.sha256(f"peirce|{family}|L{level}|{seed}|{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _check_fractions(fractions: dict[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise DatasetError(f"fractions must be non-negative and sum to 1, got {fractions!r}")


def generate_dataset(
    task: str | TaskFamily,
    level: int,
    n: int,
    split: str = "train",
    seed: int = 0,
    *,
    fractions: dict[str, float] = SPLIT_FRACTIONS,
    patience: int = 20_000,
    progress: bool | None = None,
    worked: bool = False,
) -> list[Task]:
    """`n` unique puzzles of one split, deterministic in (task, level, seed).

    Stops with `PuzzleSpaceExhausted` (a `DatasetError`) when `patience` consecutive
    candidates bring nothing new (the level's puzzle space, or this split's share of it,
    is exhausted).
    `progress`: tqdm bar; default only for n >= 1000 on a terminal.
    `worked`: the tasks are meant for `write_*(..., worked=True)`: fail before generating
    when the family has no worked solutions (the tasks themselves are the same).
    """
    family = get_family(task) if isinstance(task, str) else task
    name = family.name
    if level not in family.levels:
        raise DatasetError(f"level={level!r} is not a level of {name}; valid: {list(family.levels)}")
    if worked and family.worked_variants == 0:
        raise DatasetError(f"worked=True: task {name!r} has no worked solutions")
    _check_fractions(fractions)
    if split not in fractions:
        raise DatasetError(f"split={split!r} is not one of {list(fractions)}")
    if not isinstance(n, int) or n < 0:
        raise DatasetError(f"n must be a non-negative int, got {n!r}")
    if fractions[split] == 0 and n > 0:
        raise DatasetError(f"split={split!r} has fraction 0; cannot draw {n} puzzles")
    if progress is None:
        progress = n >= 1000 and sys.stderr.isatty()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"{name} L{level} {split}", unit="puzzle")
    seen: set[str] = set()
    tasks: list[Task] = []
    k = since_new = 0
    try:
        while len(tasks) < n:
            if since_new >= patience:
                raise PuzzleSpaceExhausted(
                    f"{name} L{level} split={split!r}: found only {len(tasks)} of n={n} unique puzzles; "
                    f"{patience} candidates in a row brought nothing new (candidates drawn: {k})",
                    found=len(tasks),
                    n=n,
                )
            cand_seed = derive_seed(name, level, seed, k)
            k += 1
            since_new += 1
            drawn = family.generate_one(level, random.Random(cand_seed))
            if drawn is None:
                continue
            puzzle, puzzle_text, solution_text = drawn
            key = canonical_text(puzzle_text)
            if key in seen:
                continue
            seen.add(key)
            if _split_of_key(name, key, fractions) != split:
                continue
            since_new = 0
            tasks.append(
                Task(
                    id=f"{name}-L{level}-{split}-{len(tasks):06d}",
                    family=name,
                    level=level,
                    split=split,
                    puzzle=puzzle,
                    puzzle_text=puzzle_text,
                    solution_text=solution_text,
                    seed=cand_seed,
                )
            )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return tasks


# ---------------------------------------------------------------- writing


def worked_completion(task: Task) -> str:
    """The task's worked solution, phrasing drawn from a hash of (task, canonical text) so
    it is the same in every file and process. DatasetError naming the task when its
    family has none or its text cannot be worked."""
    try:
        family = get_family(task.family)
    except UnknownTaskError as exc:
        raise DatasetError(f"worked=True: task {task.id!r}: {exc}") from None
    digest = hashlib.sha256(f"worked|{task.family}\n{canonical_text(task.puzzle_text)}".encode()).digest()
    try:
        return family.worked_solution(task.puzzle_text, rng=random.Random(int.from_bytes(digest[:8], "big")))
    except NoWorkedSolutionError as exc:
        raise DatasetError(f"worked=True: task {task.id!r}: {exc}") from None
    except ValueError as exc:
        raise DatasetError(f"worked=True: task {task.id!r} has no worked solution: {exc}") from None


def _parquet_schema(worked: bool = False):
    import pyarrow as pa

    message = pa.struct([("content", pa.string()), ("role", pa.string())])
    return pa.schema(
        [
            ("puzzle_text", pa.string()),
            ("solution_text", pa.string()),
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            (
                "reward_model",
                pa.struct(
                    [
                        (
                            "ground_truth",
                            pa.struct([("solution_text_format", pa.string()), ("statements", pa.list_(pa.string()))]),
                        ),
                        ("style", pa.string()),
                    ]
                ),
            ),
            ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string())])),
            ("id", pa.string()),
            ("task", pa.string()),
            ("level", pa.int64()),
            ("puzzle", pa.string()),
            ("seed", pa.uint64()),
        ]
        + ([("worked_solution", pa.string())] if worked else [])
    )


def _reference_text(task: Task) -> str:
    """The family's own reference-style prompt where it has one (toy/domain tasks),
    else the MAA reference renderer."""
    try:
        family = get_family(task.family)
    except KeyError:
        family = None
    render = getattr(family, "render", None)
    if render is None:
        return render_prompt(task, style="reference").text
    return render(task, "reference").text


def _prompt_messages(task: Task, prompt_style: str) -> list[dict[str, str]]:
    if prompt_style == "reference":
        return [{"content": _reference_text(task), "role": "user"}]
    if prompt_style == "messages":
        return [{"content": m["content"], "role": m["role"]} for m in chat_messages(task.family, task.puzzle_text)]
    raise DatasetError(f"prompt_style={prompt_style!r} is not valid; use 'reference' or 'messages'")


def task_to_row(task: Task, index: int, prompt_style: str = "reference", *, worked: bool = False) -> dict[str, Any]:
    """One verl RLHFDataset row. prompt_style "reference": one user message holding the
    whole pre-rendered Qwen2.5 prompt (as the released files); "messages": system + user
    messages, for trainers that apply the policy's own chat template. `worked`: add
    `worked_solution` (`worked_completion`)."""
    row = {
        "puzzle_text": task.puzzle_text,
        "solution_text": task.solution_text,
        "data_source": DATA_SOURCE,
        "prompt": _prompt_messages(task, prompt_style),
        "ability": ABILITY,
        "reward_model": {
            "ground_truth": {"solution_text_format": task.solution_text, "statements": []},
            "style": "rule",
        },
        "extra_info": {"index": index, "split": task.split},
        "id": task.id,
        "task": task.family,
        "level": task.level,
        "puzzle": json.dumps(task.puzzle, ensure_ascii=False, sort_keys=True),
        "seed": task.seed,
    }
    if worked:
        row["worked_solution"] = worked_completion(task)
    return row


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_parquet(tasks: Iterable[Task], path: str | os.PathLike, prompt_style: str = "reference", *,
                  worked: bool = False) -> Path:
    """Write tasks in the verl layout (plus `worked_solution` with `worked`); written under
    a temp name, then renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if prompt_style not in ("reference", "messages"):
        raise DatasetError(f"prompt_style={prompt_style!r} is not valid; use 'reference' or 'messages'")
    path = Path(path)
    rows = [task_to_row(t, i, prompt_style, worked=worked) for i, t in enumerate(tasks)]
    table = pa.Table.from_pylist(rows, schema=_parquet_schema(worked))
    tmp = _atomic_target(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


_JSON_ENCODER = msgspec.json.Encoder()
_JSON_TASK_DECODER = msgspec.json.Decoder(Task)


def write_jsonl(tasks: Iterable[Task], path: str | os.PathLike, *, worked: bool = False) -> Path:
    """One `Task` JSON object per line (fields id, task, level, split, puzzle, puzzle_text,
    solution_text, seed; `worked_solution` last with `worked`), so `peirce solve|score`
    read it directly (readers ignore the extra field)."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            for t in tasks:
                record: Any = t
                if worked:
                    record = {**msgspec.to_builtins(t), "worked_solution": worked_completion(t)}
                fh.write(_JSON_ENCODER.encode(record) + b"\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def write_tasks(tasks: Iterable[Task], path: str | os.PathLike, prompt_style: str = "reference", *,
                worked: bool = False) -> Path:
    """Write by suffix: .parquet or .jsonl; `worked` adds the `worked_solution` column."""
    suffix = Path(path).suffix
    if suffix == ".parquet":
        return write_parquet(tasks, path, prompt_style, worked=worked)
    if suffix == ".jsonl":
        return write_jsonl(tasks, path, worked=worked)
    raise DatasetError(f"output path {str(path)!r} must end in .parquet or .jsonl, got suffix {suffix!r}")


# ---------------------------------------------------------------- reading


def _infer_task(path: Path) -> str:
    known = set(family_names()) | set(TASK_INSTRUCTIONS)
    for part in reversed(path.resolve().parts):
        stem = part.lower()
        for name in sorted(known, key=len, reverse=True):
            if name in stem:
                return name
    raise DatasetError(f"cannot infer the task of {str(path)!r} from its path; pass task= (one of {sorted(known)})")


def _infer_level(path: Path) -> int:
    m = re.search(r"level[_-]?(\d+)", path.name, re.IGNORECASE)
    if not m:
        raise DatasetError(f"cannot infer the level of {str(path)!r}: no 'difficulty' column and no 'levelN' in its name")
    return int(m.group(1))


def _reference_row_to_task(row: dict[str, Any], task: str, path_level: int | None, i: int) -> Task:
    level = row.get("difficulty")
    if level is None:
        if path_level is None:
            raise DatasetError(f"row {i}: no 'difficulty' and no level in the path")
        level = path_level
    extra = row.get("extra_info") or {}
    split = extra.get("split") or "test"
    index = extra.get("index", i)
    core = {"puzzle_text", "solution_text", "data_source", "prompt", "ability", "reward_model", "extra_info"}
    puzzle = {k: v for k, v in row.items() if k not in core}  # the reference's own columns, kept verbatim
    return Task(
        id=f"maa-{task}-L{int(level)}-{split}-{int(index):06d}",
        family=task,
        level=int(level),
        split=str(split),
        puzzle=puzzle,
        puzzle_text=row["puzzle_text"],
        solution_text=str(row["solution_text"]),
        seed=0,
    )


def _peirce_row_to_task(row: dict[str, Any], i: int) -> Task:
    try:
        puzzle = json.loads(row["puzzle"]) if isinstance(row["puzzle"], str) else row["puzzle"]
        return msgspec.convert(
            {
                "id": row["id"],
                "task": row["task"],
                "level": row["level"],
                "split": (row.get("extra_info") or {}).get("split", ""),
                "puzzle": puzzle,
                "puzzle_text": row["puzzle_text"],
                "solution_text": row["solution_text"],
                "seed": row.get("seed") or 0,
            },
            Task,
        )
    except (KeyError, ValueError, msgspec.ValidationError) as exc:
        raise DatasetError(f"row {i}: {exc}") from None


def read_parquet(path: str | os.PathLike, task: str | None = None) -> list[Task]:
    import pyarrow.parquet as pq

    path = Path(path)
    table = pq.read_table(path)
    rows = table.to_pylist()
    if "task" in table.column_names and "id" in table.column_names:
        out = [_peirce_row_to_task(r, i) for i, r in enumerate(rows)]
        if task is not None:
            out = [t for t in out if t.family == task]
        return out
    missing = {"puzzle_text", "solution_text"} - set(table.column_names)
    if missing:
        raise DatasetError(f"{str(path)!r} is not a task file: missing columns {sorted(missing)}")
    name = task or _infer_task(path)
    path_level = None if "difficulty" in table.column_names else _infer_level(path)
    return [_reference_row_to_task(r, name, path_level, i) for i, r in enumerate(rows)]


def read_jsonl(path: str | os.PathLike, task: str | None = None) -> list[Task]:
    out = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                t = _JSON_TASK_DECODER.decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise DatasetError(f"{os.fspath(path)}:{lineno}: {exc}") from None
            if task is None or t.family == task:
                out.append(t)
    return out


def read_tasks(path: str | os.PathLike, task: str | None = None) -> list[Task]:
    """Tasks from a peirce parquet/jsonl file or a released MAA reference parquet file.

    For reference files the task comes from `task` or the path (".../deduction/..."), the
    level from the `difficulty` column or "levelN" in the file name. For peirce files
    `task` filters."""
    suffix = Path(path).suffix
    if suffix == ".parquet":
        return read_parquet(path, task)
    if suffix == ".jsonl":
        return read_jsonl(path, task)
    raise DatasetError(f"input path {os.fspath(path)!r} must end in .parquet or .jsonl, got suffix {suffix!r}")


__all__ = [
    "PROMPT_STYLES",
    "SPLIT_FRACTIONS",
    "DatasetError",
    "PuzzleSpaceExhausted",
    "canonical_text",
    "derive_seed",
    "generate_dataset",
    "read_jsonl",
    "read_parquet",
    "read_tasks",
    "split_of",
    "task_to_row",
    "worked_completion",
    "write_jsonl",
    "write_parquet",
    "write_tasks",
]
