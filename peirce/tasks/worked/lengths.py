"""Token lengths of worked solutions per family and level: the SFT sequence budget.

`python -m peirce.tasks.worked.lengths [--n 200] [--levels 1 2 3]` prints the markdown
table of the README (embedded SmolLM2 tokenizer, train-split puzzles, variants in turn).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Any

from peirce.tasks.base import get_family
from peirce.tasks.dataset import generate_dataset

FAMILIES = ("deduction", "induction", "abduction")


@dataclass(frozen=True)
class LengthRow:
    task: str
    level: int
    n: int
    median_tokens: float
    max_tokens: int


def measure(tokenizer: Any, families=FAMILIES, levels=(1, 2, 3), n: int = 200, seed: int = 0) -> list[LengthRow]:
    rows = []
    for name in families:
        family = get_family(name)
        for level in levels:
            tasks = generate_dataset(family, level, n, "train", seed)
            counts = [len(tokenizer(family.worked_solution(t.puzzle_text, variant=i % family.worked_variants),
                                    add_special_tokens=False)["input_ids"]) for i, t in enumerate(tasks)]
            rows.append(LengthRow(name, level, len(counts), statistics.median(counts), max(counts)))
    return rows


def markdown(rows: list[LengthRow]) -> str:
    levels = sorted({r.level for r in rows})
    head = "| tokens (median / max) | " + " | ".join(f"L{lv}" for lv in levels) + " |"
    lines = [head, "|---|" + "---|" * len(levels)]
    for name in dict.fromkeys(r.task for r in rows):
        cells = {r.level: f"{r.median_tokens:g} / {r.max_tokens}" for r in rows if r.task == name}
        lines.append(f"| {name} | " + " | ".join(cells.get(lv, "") for lv in levels) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="puzzles per family and level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from peirce.model.embedded import prepare_embedded_model

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_embedded_model()))
    print(markdown(measure(tokenizer, levels=tuple(args.levels), n=args.n, seed=args.seed)))


if __name__ == "__main__":
    main()
