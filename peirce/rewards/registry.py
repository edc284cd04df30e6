"""Reward functions registered by name, all with one signature.

`fn(task: Task, assistant_turn: str) -> RewardResult`, where `assistant_turn` is the whole
assistant message (prompt pre-fill + completion). Callers look rewards up with
`get_reward(name)`; nothing dispatches on data_source prefixes. Domain rewards (math,
code, science) register themselves the same way from their own modules.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from peirce.registry import Registry, UnknownNameError, import_modules
from peirce.tasks.base import Task


class RewardResult(msgspec.Struct, frozen=True):
    """One scored response.

    reward: scalar the learner trains on.
    format_ok: the response had the required structure.
    correct: True/False when the answer was judged; None when it was not (format
        failure or unparsable answer).
    answer: the extracted answer text; None when none was found.
    """

    reward: float
    format_ok: bool
    correct: bool | None
    answer: str | None = None


class RewardFn(Protocol):
    def __call__(self, task: Task, assistant_turn: str) -> RewardResult: ...


class UnknownRewardError(UnknownNameError):
    """A reward name that is not registered."""


# Modules that register built-in rewards on import, imported on the first miss; missing
# ones are skipped so the registry works while domain rewards are still being written.
REWARDS: Registry[RewardFn] = Registry(
    "reward",
    loader=import_modules(*(f"peirce.rewards.{m}" for m in ("maa", "math", "code", "science", "toy"))),
    error=UnknownRewardError,
)
register_reward = REWARDS.register  # decorator: make `fn` available as `get_reward(name)`
get_reward = REWARDS.get
reward_names = REWARDS.names
