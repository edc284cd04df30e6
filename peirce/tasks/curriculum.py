"""Level curriculum: which level the next batch comes from, and which items.

Two modes:
- `epochs` (the MAA recipe): `epochs_per_level` passes over each level's dataset, in the
  order of `levels`, then the next level (L1 then L2, 20 epochs each for deduction).
- `reward_threshold`: stay at a level until the moving average of the last `window`
  reported rewards of that level reaches `reward_threshold` (after at least `min_steps`
  batches there), or `epochs_per_level` epochs pass when set; then the next level.

Every epoch draws a fresh permutation of the level's item indices from (seed, level,
epoch) alone, so the data position is three integers (level, epoch, index) and a resumed
run yields exactly the remaining stream. In an async pipeline rewards arrive late: a
report for a level the curriculum has already left is counted and ignored.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

CurriculumMode = Literal["epochs", "reward_threshold"]
MODES: tuple[str, ...] = ("epochs", "reward_threshold")


@dataclass(frozen=True)
class CurriculumConfig:
    levels: tuple[int, ...]  # in training order
    level_sizes: Mapping[int, int]  # items in each level's training set
    batch_size: int  # items (prompts) per batch
    mode: CurriculumMode = "epochs"
    epochs_per_level: int | None = 1  # epochs: passes per level; reward_threshold: cap, None = no cap
    reward_threshold: float = 0.0  # reward_threshold mode: advance when the moving average >= this
    window: int = 64  # rewards (samples) in the moving average
    min_steps: int = 1  # reward_threshold mode: batches at a level before it may advance
    seed: int = 0
    drop_last: bool = True  # drop an epoch's last partial batch

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "level_sizes", dict(self.level_sizes))
        if not self.levels:
            raise ValueError("CurriculumConfig.levels must name at least one level, got ()")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"CurriculumConfig.levels must not repeat a level, got {self.levels!r}")
        if self.mode not in MODES:
            raise ValueError(f"CurriculumConfig.mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("window", self.window, 1)
        _int_at_least("min_steps", self.min_steps, 0)
        if self.epochs_per_level is None:
            if self.mode == "epochs":
                raise ValueError("CurriculumConfig.epochs_per_level=None needs mode='reward_threshold'")
        else:
            _int_at_least("epochs_per_level", self.epochs_per_level, 1)
        for lvl in self.levels:
            size = self.level_sizes.get(lvl)
            if size is None:
                raise ValueError(f"CurriculumConfig.level_sizes has no entry for level {lvl!r}")
            _int_at_least(f"level_sizes[{lvl}]", size, 1)
            if self.drop_last and size < self.batch_size:
                raise ValueError(
                    f"CurriculumConfig.level_sizes[{lvl}]={size} is smaller than batch_size={self.batch_size} "
                    "with drop_last=True: that level would yield no batch"
                )

    def data_key(self) -> dict[str, Any]:
        """The settings that decide the item stream; a resume must match them."""
        return {
            "levels": list(self.levels),
            "level_sizes": {str(k): self.level_sizes[k] for k in self.levels},
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"CurriculumConfig.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class CurriculumBatch:
    level: int
    epoch: int
    indices: tuple[int, ...]  # into the level's training set


@dataclass
class _Position:
    level_index: int = 0
    epoch: int = 0
    index: int = 0  # next offset into this epoch's permutation
    steps_at_level: int = 0
    ignored_reports: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per level left


class CurriculumDone(RuntimeError):
    """`next_batch()` after the last level finished."""


class Curriculum:
    def __init__(self, config: CurriculumConfig) -> None:
        self.config = config
        self._pos = _Position()
        self._window: deque[float] = deque(maxlen=config.window)
        self._perm_key: tuple[int, int] | None = None
        self._perm: list[int] = []
        self._normalise()

    # ------------------------------------------------------------------ queries

    @property
    def done(self) -> bool:
        return self._pos.level_index >= len(self.config.levels)

    @property
    def level(self) -> int | None:
        return None if self.done else self.config.levels[self._pos.level_index]

    def next_batch_level(self) -> int | None:
        """The level the next batch will come from (None when done); does not advance."""
        return self.level

    def moving_average(self) -> float | None:
        return sum(self._window) / len(self._window) if self._window else None

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self._pos.history)

    # ------------------------------------------------------------------ stream

    def next_batch(self) -> CurriculumBatch:
        if self.done:
            raise CurriculumDone(f"curriculum finished all levels {self.config.levels}")
        cfg, p = self.config, self._pos
        level = cfg.levels[p.level_index]
        perm = self._permutation(level, p.epoch)
        indices = tuple(perm[p.index : p.index + cfg.batch_size])
        batch = CurriculumBatch(level=level, epoch=p.epoch, indices=indices)
        p.index += len(indices)
        p.steps_at_level += 1
        self._normalise()
        return batch

    def report(self, level: int, rewards: Sequence[float]) -> bool:
        """Feed rewards of samples drawn at `level`; returns True when this advanced the level."""
        if self.done or level != self.level:
            self._pos.ignored_reports += 1
            return False
        self._window.extend(float(r) for r in rewards)
        cfg = self.config
        if (
            cfg.mode == "reward_threshold"
            and self._pos.steps_at_level >= cfg.min_steps
            and len(self._window) == cfg.window
            and self.moving_average() >= cfg.reward_threshold  # type: ignore[operator]
        ):
            self._advance("reward_threshold")
            return True
        return False

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        p = self._pos
        return {
            "data_key": self.config.data_key(),
            "level_index": p.level_index,
            "epoch": p.epoch,
            "index": p.index,
            "steps_at_level": p.steps_at_level,
            "ignored_reports": p.ignored_reports,
            "history": [dict(h) for h in p.history],
            "window": list(self._window),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        want = self.config.data_key()
        for key, value in want.items():
            if state["data_key"].get(key) != value:
                raise ValueError(
                    f"curriculum state has {key}={state['data_key'].get(key)!r} but the config has {value!r}: "
                    "the saved position would point into a different item stream"
                )
        self._pos = _Position(
            level_index=int(state["level_index"]),
            epoch=int(state["epoch"]),
            index=int(state["index"]),
            steps_at_level=int(state["steps_at_level"]),
            ignored_reports=int(state["ignored_reports"]),
            history=[dict(h) for h in state["history"]],
        )
        self._window = deque((float(r) for r in state["window"]), maxlen=self.config.window)
        self._normalise()

    # ------------------------------------------------------------------ internals

    def _permutation(self, level: int, epoch: int) -> list[int]:
        if self._perm_key != (level, epoch):
            perm = list(range(self.config.level_sizes[level]))
            random.Random(f"peirce-curriculum:{self.config.seed}:{level}:{epoch}").shuffle(perm)
            self._perm_key, self._perm = (level, epoch), perm
        return self._perm

    def _normalise(self) -> None:
        """Roll over finished epochs and levels so the position always names a real batch."""
        cfg, p = self.config, self._pos
        while not self.done:
            size = cfg.level_sizes[cfg.levels[p.level_index]]
            left = size - p.index
            if left > 0 and not (cfg.drop_last and left < cfg.batch_size):
                return
            p.epoch, p.index = p.epoch + 1, 0
            if cfg.epochs_per_level is not None and p.epoch >= cfg.epochs_per_level:
                self._advance("epochs")

    def _advance(self, reason: str) -> None:
        p = self._pos
        p.history.append(
            {"level": self.config.levels[p.level_index], "reason": reason, "steps": p.steps_at_level,
             "epochs": p.epoch, "moving_average": self.moving_average()}
        )
        p.level_index += 1
        p.epoch = p.index = p.steps_at_level = 0
        self._window.clear()
        self._normalise()
