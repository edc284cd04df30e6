"""Where time goes: the idle share of the learner and of the rollout engines, per step.

Sampled by the driver loop (every pass, a few ms apart): the learner is busy while a
train call is out; a rollout worker is busy while it holds an item (the dispatcher knows
who holds what). Reported like verl's `trainer/idle_ratio`, per role, as the share of
wall time since the previous step: 0 = always busy, 1 = never. With max_staleness 0 the
two roughly add to one (they take turns); asynchrony shows as both falling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class _Role:
    busy: float = 0.0  # busy seconds (summed over the role's workers)
    seen: float = 0.0  # worker-seconds observed


class IdleClock:
    def __init__(self, now: float) -> None:
        self._last = now
        self._roles: dict[str, _Role] = {}

    def tick(self, now: float, **busy: Sequence[bool]) -> None:
        """Account the time since the last tick to each role's workers' states now
        (`learner=[True]`, `rollout=[holds_an_item for each registered worker]`)."""
        dt = max(0.0, now - self._last)
        self._last = now
        for role, flags in busy.items():
            r = self._roles.setdefault(role, _Role())
            r.seen += dt * len(flags)
            r.busy += dt * sum(bool(f) for f in flags)

    def take(self) -> dict[str, float | None]:
        """Idle ratio per role since the last take (None: no worker of that role was seen)."""
        out = {role: (1.0 - r.busy / r.seen) if r.seen > 0 else None for role, r in self._roles.items()}
        self._roles = {}
        return out
