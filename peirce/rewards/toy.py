"""Reward of the toy "uppercase" task (see peirce.tasks.toy)."""

from __future__ import annotations

from peirce.rewards.registry import RewardResult, register_reward
from peirce.tasks.base import Task
from peirce.tasks.toy import uppercase_fraction


@register_reward("uppercase")
def uppercase(task: Task, assistant_turn: str) -> RewardResult:
    frac = uppercase_fraction(assistant_turn)
    return RewardResult(reward=frac, format_ok=True, correct=frac >= 0.5, answer=None)
