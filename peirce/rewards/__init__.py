"""Rewards: verifiers registered by name with one signature, `fn(task, assistant_turn)`."""

from peirce.rewards.parsing import check_format, extract_answer
from peirce.rewards.registry import RewardResult, get_reward, register_reward, reward_names

__all__ = [
    "RewardResult",
    "check_format",
    "extract_answer",
    "get_reward",
    "register_reward",
    "reward_names",
]
