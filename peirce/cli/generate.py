"""`peirce generate`: write a deterministic, split-disjoint puzzle set to .parquet or .jsonl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_SUFFIXES = (".parquet", ".jsonl")


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
    p.add_argument("--n", type=int, required=True, help="number of puzzles")
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
    try:
        tasks = generate_dataset(args.task, args.level, args.n, args.split, args.seed)
        write_tasks(tasks, args.out, prompt_style=args.prompt_style)
    except (UnknownTaskError, DatasetError) as exc:
        print(f"peirce generate: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(tasks)} {args.task} L{args.level} {args.split} puzzles to {args.out}", file=sys.stderr)
    return 0
