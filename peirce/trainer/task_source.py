"""Where a run's tasks come from: per-level datasets walked by the curriculum.

Each level's training set is every configured family's puzzles at that level
(generated deterministically, or read from `tasks.data_files`), concatenated in family
order; the curriculum decides which level and which shuffled indices come next. Tasks
that were in flight when a run stopped are pushed to the front on resume, so nothing
admitted is skipped.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from peirce.config.schema import TrainConfig
from peirce.tasks.base import Task, get_family
from peirce.tasks.curriculum import Curriculum, CurriculumConfig
from peirce.tasks.dataset import generate_dataset, read_tasks


def _is_dataset_family(name: str) -> bool:
    from peirce.tasks.domain import DatasetFamily

    return isinstance(get_family(name), DatasetFamily)


def _read(path: str, families: list[str]) -> list[Task]:
    """Generated-family files through dataset.read_tasks; math/code/science files (any
    supported layout, e.g. plain verl rows) through the domain loader."""
    if any(_is_dataset_family(f) for f in families):
        from peirce.tasks.domain import load_domain_file

        fam = families[0] if len(families) == 1 else None
        return load_domain_file(path, fam)
    return read_tasks(path)


def build_level_sets(cfg: TrainConfig) -> dict[int, list[Task]]:
    """Each level's training tasks: from `tasks.data_files`, else generated (puzzle
    families) or the shipped sample sets (math/code/science)."""
    tc = cfg.tasks
    sets: dict[int, list[Task]] = {lvl: [] for lvl in tc.levels}
    if tc.data_files:
        for path in tc.data_files:
            for task in _read(path, tc.families):
                if task.level in sets and task.family in tc.families:
                    sets[task.level].append(task)
    else:
        for fam in tc.families:
            if _is_dataset_family(fam):
                from peirce.tasks.domain import load_samples

                for task in load_samples(fam, "train"):
                    if task.level in sets:
                        sets[task.level].append(task)
                continue
            for lvl in tc.levels:
                sets[lvl].extend(generate_dataset(fam, lvl, tc.n_per_level, "train", cfg.trainer.seed))
    empty = [lvl for lvl, tasks in sets.items() if not tasks]
    if empty:
        raise ValueError(f"tasks: no training tasks for level(s) {empty} of families {tc.families}")
    return sets


class TaskSource:
    def __init__(self, cfg: TrainConfig, level_sets: dict[int, list[Task]] | None = None) -> None:
        self.sets = level_sets if level_sets is not None else build_level_sets(cfg)
        cc = cfg.curriculum
        self.curriculum = Curriculum(CurriculumConfig(
            levels=tuple(cfg.tasks.levels), level_sizes={lvl: len(t) for lvl, t in self.sets.items()},
            batch_size=cfg.rollout.prompts_per_step, mode=cc.mode, epochs_per_level=cc.epochs_per_level,
            reward_threshold=cc.reward_threshold, window=cc.window, min_steps=cc.min_steps_per_level,
            seed=cfg.trainer.seed))
        self._queue: collections.deque[Task] = collections.deque()
        self._front: collections.deque[Task] = collections.deque()

    @property
    def level(self) -> int:
        return self.curriculum.level

    @property
    def done(self) -> bool:
        return not self._front and not self._queue and self.curriculum.done

    def next_task(self) -> Task | None:
        if self._front:
            return self._front.popleft()
        if not self._queue and not self.curriculum.done:
            batch = self.curriculum.next_batch()
            self._queue.extend(self.sets[batch.level][i] for i in batch.indices)
        return self._queue.popleft() if self._queue else None

    def push_front(self, tasks: Iterable[Task]) -> None:
        self._front.extendleft(reversed(list(tasks)))

    def report(self, level_rewards: dict[tuple[str, int], list[float]]) -> None:
        by_level: dict[int, list[float]] = {}
        for (_task, level), values in level_rewards.items():
            by_level.setdefault(level, []).extend(values)
        for level, values in by_level.items():
            self.curriculum.report(level, values)

    def state_dict(self) -> dict[str, Any]:
        """Curriculum position; queued-but-undispatched tasks are re-derived by rewinding."""
        import msgspec

        return {"curriculum": self.curriculum.state_dict(),
                "queued": [msgspec.to_builtins(t) for t in [*self._front, *self._queue]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import msgspec

        self.curriculum.load_state_dict(state["curriculum"])
        self._front = collections.deque(msgspec.convert(t, Task) for t in state.get("queued", []))
        self._queue.clear()
