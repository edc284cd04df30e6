"""Reward functions registered by name, all with one signature.

`fn(task: Task, assistant_turn: str) -> RewardResult`, where `assistant_turn` is the whole
assistant message (prompt pre-fill + completion). Callers look rewards up with
`get_reward(name)`; nothing dispatches on data_source prefixes. Domain rewards (math,
code, science) register themselves the same way from their own modules.
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

import msgspec

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


class UnknownRewardError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


_REWARDS: dict[str, RewardFn] = {}

# Modules that register built-in rewards on import; missing ones are skipped so the
# registry works while domain rewards are still being written.
_BUILTIN_MODULES: tuple[str, ...] = ("maa", "math", "code", "science", "toy")


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make `fn` available as `get_reward(name)`. Re-registering a name is an error."""

    def deco(fn: RewardFn) -> RewardFn:
        existing = _REWARDS.get(name)
        same = existing is not None and _qualname(existing) == _qualname(fn)  # module reload
        if existing is not None and existing is not fn and not same:
            raise ValueError(f"reward name {name!r} is already registered to {existing!r}")
        _REWARDS[name] = fn
        return fn

    return deco


def _qualname(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _load_builtin_rewards() -> None:
    for mod in _BUILTIN_MODULES:
        full = f"peirce.rewards.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise


def get_reward(name: str) -> RewardFn:
    if name not in _REWARDS:
        _load_builtin_rewards()
    try:
        return _REWARDS[name]
    except KeyError:
        raise UnknownRewardError(
            f"unknown reward {name!r}; valid rewards: {', '.join(sorted(_REWARDS)) or '(none)'}"
        ) from None


def reward_names() -> list[str]:
    _load_builtin_rewards()
    return sorted(_REWARDS)
