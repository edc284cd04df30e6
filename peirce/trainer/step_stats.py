"""Per-step statistics of a trained batch (pure): rewards by task/level, staleness, sizes.

MASA meta samples (group id `<gid>.meta`, peirce.masa.ids) are counted apart: the task
rewards, accuracy and curriculum see only solutions, and `meta` holds the meta rewards,
their parts and the calibration error (from the reward_details the planner wrote)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from peirce.masa.ids import is_meta_group
from peirce.transport.wire import ScoredSample

META_PARTS = ("length", "pass_rate", "notions")


@dataclass
class MetaStepStats:
    rewards: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in META_PARTS})
    abs_errors: list[float] = field(default_factory=list)  # valid predictions only
    tokens: int = 0

    def add(self, s: ScoredSample) -> None:
        self.rewards.append(s.reward)
        d = s.reward_details
        for p in META_PARTS:
            if isinstance(d.get(p), (int, float)):
                self.parts[p].append(float(d[p]))
        if isinstance(d.get("abs_error"), (int, float)):
            self.abs_errors.append(float(d["abs_error"]))
        self.tokens += len(s.sample.response_token_ids)


@dataclass
class StepStats:
    rewards: list[float]
    correct: list[bool]
    staleness: list[int]
    response_lengths: list[int]
    truncated: int = 0  # solutions stopped at their max_tokens (what algorithm.overlong_filter masks)
    version_spans: list[int] = field(default_factory=list)  # last - first version, per sample continued under newer weights
    level_rewards: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    meta: MetaStepStats | None = None  # MASA runs only

    @classmethod
    def from_batch(cls, groups: list[list[ScoredSample]], trained_version: int) -> "StepStats":
        everything = [s for g in groups for s in g]
        flat = [s for s in everything if not is_meta_group(s.sample.group_id)]
        meta = None
        if len(flat) < len(everything):
            meta = MetaStepStats()
            for s in everything:
                if is_meta_group(s.sample.group_id):
                    meta.add(s)
        by_level: dict[tuple[str, int], list[float]] = {}
        for s in flat:
            by_level.setdefault((s.sample.family, s.sample.level), []).append(s.reward)
        return cls(
            rewards=[s.reward for s in flat],
            correct=[bool(s.correct) for s in flat],
            staleness=[trained_version - s.sample.policy_version for s in everything],  # of the oldest token
            response_lengths=[len(s.sample.response_token_ids) for s in flat],
            truncated=sum(s.sample.finish_reason == "length" for s in flat),
            version_spans=[s.sample.version_segments[-1][1] - s.sample.policy_version
                           for s in everything if s.sample.version_segments],
            level_rewards=by_level,
            meta=meta,
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
            "truncated_samples": self.truncated,
            # partial rollouts: samples continued under newer weights, and the widest version span
            "interrupted_samples": len(self.version_spans),
            "version_span_max": max(self.version_spans, default=0),
        }
        for (task, level), values in sorted(self.level_rewards.items()):
            rec[f"reward/{task}/L{level}"] = statistics.fmean(values)
        if self.meta is not None:
            rec.update(self.meta_record())
        return rec

    def meta_record(self) -> dict[str, float | None]:
        m = self.meta
        if m is None:
            return {}
        total = m.tokens + sum(self.response_lengths)
        rec: dict[str, float | None] = {
            "meta/reward_mean": statistics.fmean(m.rewards) if m.rewards else None,
            "meta/calibration_error": statistics.fmean(m.abs_errors) if m.abs_errors else None,
            "meta/samples": len(m.rewards), "meta/tokens": m.tokens,
            "meta/token_share": m.tokens / total if total else None,
        }
        for p in META_PARTS:
            rec[f"meta/reward_{p}"] = statistics.fmean(m.parts[p]) if m.parts[p] else None
        return rec
