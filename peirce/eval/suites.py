"""Named evaluation suites: a name resolves to a list of Tasks, each scored by its family's reward.

| name                      | tasks                                                            |
|---------------------------|------------------------------------------------------------------|
| maa-{deduction,induction,abduction} | peirce-generated test split, `levels` x `per_level`, `seed` |
| maa-reference-{task}      | the released MAA test files (`$PEIRCE_REFERENCE_DATA/<task>/levelN-test.parquet`) |
| {math,code,science}-sample| the small sets shipped in peirce/data/domain (test split)        |
| file:<format>:<path>      | a local benchmark file (see `peirce.eval.loaders.FORMATS`)       |

The peirce test split is disjoint from train by construction (`peirce.tasks.dataset`), so
an MAA suite never scores puzzles a specialist trained on. `PEIRCE_REFERENCE_DATA` is an
absolute path or one relative to the repository root; default `../shared/reference-data/maa`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from peirce.tasks.base import Task

MAA_TASKS = ("deduction", "induction", "abduction")
DOMAIN_TASKS = ("math", "code", "science")
REFERENCE_ENV = "PEIRCE_REFERENCE_DATA"
DEFAULT_REFERENCE = "../shared/reference-data/maa"
REPO_ROOT = Path(__file__).resolve().parents[2]


class SuiteError(ValueError):
    """Unknown suite name or options that cannot produce it; the message names the value."""


@dataclass(frozen=True)
class SuiteOptions:
    """How suites are drawn. levels=None: MAA generated suites use DEFAULT_LEVELS,
    reference suites every level on disk. limit: keep the first `limit` tasks of each suite."""

    levels: tuple[int, ...] | None = None
    per_level: int = 50
    seed: int = 0
    limit: int | None = None
    reference_dir: Path | None = None
    file_seed: int = 0  # GPQA choice shuffle

    def __post_init__(self) -> None:
        levels = self.levels
        if levels is not None and (not levels or not all(type(x) is int and 1 <= x <= 5 for x in levels)):
            raise SuiteError(f"levels={self.levels!r}: must be a non-empty tuple of ints in 1..5")
        if type(self.per_level) is not int or self.per_level < 1:
            raise SuiteError(f"per_level={self.per_level!r}: must be an int >= 1")
        if self.limit is not None and (type(self.limit) is not int or self.limit < 1):
            raise SuiteError(f"limit={self.limit!r}: must be None or an int >= 1")


DEFAULT_LEVELS = (1, 2, 3)


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: list[Task] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise SuiteError(f"suite {self.name!r}: no tasks")
        ids = [t.id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise SuiteError(f"suite {self.name!r}: task ids are not unique")


def suite_names() -> list[str]:
    """The fixed suite names (file suites are `file:<format>:<path>`)."""
    return ([f"maa-{t}" for t in MAA_TASKS] + [f"maa-reference-{t}" for t in MAA_TASKS]
            + [f"{t}-sample" for t in DOMAIN_TASKS])


def reference_dir(options: SuiteOptions | None = None) -> Path:
    if options is not None and options.reference_dir is not None:
        return Path(options.reference_dir)
    raw = Path(os.environ.get(REFERENCE_ENV) or DEFAULT_REFERENCE).expanduser()
    return raw if raw.is_absolute() else (REPO_ROOT / raw).resolve()


def _generated(task: str, options: SuiteOptions) -> list[Task]:
    from peirce.tasks.dataset import PuzzleSpaceExhausted, generate_dataset

    out: list[Task] = []
    for level in options.levels or DEFAULT_LEVELS:
        try:
            out += generate_dataset(task, level, options.per_level, split="test", seed=options.seed)
        except PuzzleSpaceExhausted as exc:  # small level: its whole test split is the suite
            if exc.found == 0:
                raise SuiteError(f"maa-{task}: level {level} has no test puzzles") from None
            out += generate_dataset(task, level, exc.found, split="test", seed=options.seed)
    return out


def _reference(task: str, options: SuiteOptions) -> list[Task]:
    from peirce.tasks.dataset import read_tasks

    folder = reference_dir(options) / task
    files = sorted(folder.glob("level*-test.parquet"))
    if not files:
        raise SuiteError(f"maa-reference-{task}: no level*-test.parquet files in {str(folder)!r} "
                         f"(set {REFERENCE_ENV} to the folder holding deduction/ induction/ abduction/)")
    out: list[Task] = []
    for f in files:
        out += [t for t in read_tasks(f, task) if options.levels is None or t.level in options.levels]
    if not out:
        raise SuiteError(f"maa-reference-{task}: none of levels {list(options.levels or [])} in {str(folder)!r}")
    return out


def _file(spec: str, options: SuiteOptions) -> list[Task]:
    from peirce.eval.loaders import FORMATS, load_benchmark_file

    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[1] not in FORMATS or not parts[2]:
        raise SuiteError(f"suite {spec!r}: file suites are 'file:<format>:<path>' with format one of "
                         f"{', '.join(FORMATS)}")
    return load_benchmark_file(parts[2], parts[1], seed=options.file_seed)


def load_suite(name: str, options: SuiteOptions = SuiteOptions(), *, display_name: str | None = None) -> Suite:
    """Resolve a suite name to its tasks; SuiteError lists the valid names."""
    if not isinstance(name, str):
        raise SuiteError(f"suite={name!r}: must be a string")
    if name.startswith("file:"):
        tasks = _file(name, options)
    elif name.startswith("maa-reference-") and name.removeprefix("maa-reference-") in MAA_TASKS:
        tasks = _reference(name.removeprefix("maa-reference-"), options)
    elif name.startswith("maa-") and name.removeprefix("maa-") in MAA_TASKS:
        tasks = _generated(name.removeprefix("maa-"), options)
    elif name.endswith("-sample") and name.removesuffix("-sample") in DOMAIN_TASKS:
        from peirce.tasks.domain import load_samples

        tasks = load_samples(name.removesuffix("-sample"), "test")
    else:
        raise SuiteError(f"suite={name!r}: unknown; valid: {', '.join(suite_names())}, file:<format>:<path>")
    if options.limit is not None:
        tasks = tasks[: options.limit]
    return Suite(display_name or name, tasks)


def file_suite_name(fmt: str, path: str | os.PathLike, taken: set[str]) -> str:
    """Column name for a benchmark file: the format, or format-stem when that is taken."""
    name = fmt if fmt not in taken else f"{fmt}-{Path(path).stem}"
    k = 2
    while name in taken:
        name, k = f"{fmt}-{Path(path).stem}-{k}", k + 1
    return name
