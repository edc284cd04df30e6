"""Task-suite throughput on one core: puzzles generated and responses verified per second.

Generation is measured end to end through `generate_dataset` (rejections, de-duplication
and split filtering included) for the train split. Verification scores gold-wrapped
level-3 responses with the MAA reward (tag parsing + the family's answer parser). Both use CPU
time of this single process (`time.process_time`), so the numbers are per core and not
distorted by other load on a shared machine. Targets: 1,000 puzzles/s at levels 1-3,
20,000 verifications/s.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, parse_args  # noqa: E402

GEN_TARGET = 1000.0  # puzzles/s at L1-3
VERIFY_TARGET = 20000.0  # verifications/s


def bench_generation(name: str, level: int, n: int, repeats: int = 3) -> tuple[float, int, int | None]:
    """(median puzzles per CPU-second over `repeats` seeds, puzzles per run, size of the train
    split when smaller than n).

    One puzzle is generated first, untimed: families build lookup tables on first use
    (deduction's literal-combination tables), a one-off cost per process, not per puzzle.
    A level whose train split holds fewer than `n` puzzles (induction L1/L2) is timed on
    half of what it holds: collecting the last few of a finite space measures the coupon
    collector, not the generator."""
    from peirce.tasks.dataset import PuzzleSpaceExhausted, generate_dataset

    generate_dataset(name, level, 1, "train", seed=-1, progress=False)
    space, rates = None, []
    for seed in range(level, level + repeats):
        t0 = time.process_time()
        try:
            tasks = generate_dataset(name, level, n, "train", seed=seed, progress=False, patience=5000)
        except PuzzleSpaceExhausted as exc:
            space, n = exc.found, exc.found // 2
            t0 = time.process_time()
            tasks = generate_dataset(name, level, n, "train", seed=seed, progress=False)
        rates.append(len(tasks) / (time.process_time() - t0))
    return statistics.median(rates), n, space


def bench_verification(name: str, n_tasks: int, repeats: int) -> float:
    from peirce.rewards.maa import score_maa
    from peirce.tasks.dataset import generate_dataset

    tasks = generate_dataset(name, 3, n_tasks, "train", seed=0, progress=False)  # mid-level answers
    items = [(f"<think>reasoning</think>\n<answer>\n{t.solution_text}</answer>", t.solution_text) for t in tasks]
    for turn, gold in items[:10]:
        assert score_maa(name, turn, gold).reward == 3.0  # verify what we time
    t0 = time.process_time()
    for _ in range(repeats):
        for turn, gold in items:
            score_maa(name, turn, gold)
    dt = time.process_time() - t0
    return repeats * len(items) / dt


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from peirce.tasks.base import family_names, get_family
    from peirce.tasks.prompts import TASK_INSTRUCTIONS

    maa_families = [f for f in family_names() if f in TASK_INSTRUCTIONS]

    n_gen = 100 if args.quick else 1000
    for name in maa_families:
        for level in get_family(name).levels:
            rate, made, space = bench_generation(name, level, n_gen)
            extra = {"n": made} if space is None else {"n": made, "train_split_size": space}
            emit("tasks", f"{name}_L{level}_puzzles_per_s", round(rate, 1), "puzzles/s/core",
                 baseline=GEN_TARGET if level <= 3 else None, **extra)
    for name in maa_families:
        rate = bench_verification(name, 100 if args.quick else 500, 5 if args.quick else 40)
        emit("tasks", f"{name}_verifications_per_s", round(rate, 1), "verifications/s/core", baseline=VERIFY_TARGET)


if __name__ == "__main__":
    main()
