"""`peirce generate`: write a deterministic, split-disjoint puzzle set to .parquet or .jsonl.

The file appears whole or not at all: it is written inside a temporary folder beside
`--out` (made before generating, so an unwritable place fails at once) and renamed;
the folder is removed whatever happens.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

_SUFFIXES = (".parquet", ".jsonl")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text[:50]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "generate",
        help="generate a puzzle set (deduction, induction, abduction)",
        description=(
            "Generate N unique puzzles of one task, level and split. The same arguments give the "
            "same file on any machine; a puzzle's split is fixed by a hash of its text, so train, "
            "val and test never overlap whatever --n and --seed."
        ),
        epilog="example: peirce generate --task deduction --level 2 --n 1000 --split train --out data/ded-L2.parquet",
    )
    p.add_argument("--task", required=True, help="task family: deduction, induction or abduction")
    p.add_argument("--level", type=int, default=1, help="difficulty level, 1-5 (default 1)")
    p.add_argument("--n", type=_positive_int, required=True, help="number of puzzles (>= 1)")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="split (default train)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--out", required=True, type=Path, help="output file; .parquet (verl RLHFDataset layout) or .jsonl (one Task per line)"
    )
    p.add_argument(
        "--prompt-style",
        default="reference",
        choices=("reference", "messages"),
        help="parquet prompt column: the pre-rendered reference text (default) or system+user messages",
    )
    p.add_argument(
        "--worked",
        action="store_true",
        help="add a worked_solution field (the completion after the pre-filled <think>: trace, </think>, "
        "<answer>), for a supervised warm start; deduction, induction and abduction",
    )
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from peirce.tasks.base import UnknownTaskError
    from peirce.tasks.dataset import DatasetError, generate_dataset, write_tasks

    if args.out.suffix not in _SUFFIXES:
        print(
            f"peirce generate: error: --out {str(args.out)!r} must end in .parquet or .jsonl "
            f"(got suffix {args.out.suffix!r})",
            file=sys.stderr,
        )
        return 1
    out: Path = args.out
    if out.is_dir():
        print(f"peirce generate: error: --out {str(out)!r} is a directory; give a file name", file=sys.stderr)
        return 1
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        print(f"peirce generate: error: --out {str(out)!r}: {str(parent)!r} is not a directory", file=sys.stderr)
        return 1
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.")
    except OSError as exc:
        print(f"peirce generate: error: cannot write --out {str(out)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with staging as tmp:
        try:
            tasks = generate_dataset(args.task, args.level, args.n, args.split, args.seed, worked=args.worked)
            written = write_tasks(tasks, Path(tmp) / out.name, prompt_style=args.prompt_style, worked=args.worked)
            os.replace(written, out)
        except (UnknownTaskError, DatasetError, NotImplementedError) as exc:  # NotImplemented: a dataset-only family
            print(f"peirce generate: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"peirce generate: error: cannot write --out {str(out)!r}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    print(f"wrote {len(tasks)} {args.task} L{args.level} {args.split} puzzles to {args.out}", file=sys.stderr)
    return 0
