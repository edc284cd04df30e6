"""Per-step statistics of a trained batch (pure): rewards by task/level, staleness, sizes."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from peirce.transport.wire import ScoredSample


@dataclass
class StepStats:
    rewards: list[float]
    correct: list[bool]
    staleness: list[int]
    response_lengths: list[int]
    level_rewards: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    @classmethod
    def from_batch(cls, groups: list[list[ScoredSample]], trained_version: int) -> "StepStats":
        flat = [s for g in groups for s in g]
        by_level: dict[tuple[str, int], list[float]] = {}
        for s in flat:
            by_level.setdefault((s.sample.task_name, s.sample.level), []).append(s.reward)
        return cls(
            rewards=[s.reward for s in flat],
            correct=[bool(s.correct) for s in flat],
            staleness=[trained_version - s.sample.policy_version for s in flat],
            response_lengths=[len(s.sample.response_token_ids) for s in flat],
            level_rewards=by_level,
        )

    @property
    def reward_mean(self) -> float:
        return statistics.fmean(self.rewards) if self.rewards else float("nan")

    @property
    def staleness_mean(self) -> float:
        return statistics.fmean(self.staleness) if self.staleness else 0.0

    def as_record(self) -> dict[str, float]:
        rec: dict[str, float] = {
            "reward_mean": self.reward_mean,
            "accuracy": statistics.fmean(self.correct) if self.correct else float("nan"),
            "staleness_mean": self.staleness_mean,
            "staleness_max": max(self.staleness, default=0),
            "samples": len(self.rewards),
            "response_tokens": sum(self.response_lengths),
            "response_length_mean": statistics.fmean(self.response_lengths) if self.response_lengths else 0.0,
        }
        for (task, level), values in sorted(self.level_rewards.items()):
            rec[f"reward/{task}/L{level}"] = statistics.fmean(values)
        return rec
