"""The meta-ability-alignment reward (arXiv 2505.10554, released code).

format: +1 when the assistant turn has exactly one `<think>`, `</think>`, `<answer>`,
`</answer>` in that order, else -1. answer: +2 exact, -1.5 parsed but wrong, -2 when
unparsable or when the format failed. Totals: 3, -0.5, -1, -3. (The paper's text only
mentions +2/-2 for the answer; the released code uses the scheme above.) Answers are
compared by the task family's own `parse_answer`, so "(1) A is true" equals
"(1) A is True" exactly when the family says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from peirce.rewards.parsing import check_format, extract_answer
from peirce.rewards.registry import RewardFn, RewardResult, register_reward
from peirce.tasks.base import Task, TaskFamily, get_family


@dataclass(frozen=True)
class MaaRewardScheme:
    """Reward parts; the defaults are the released MAA code's."""

    format_ok: float = 1.0
    format_bad: float = -1.0
    answer_correct: float = 2.0
    answer_wrong: float = -1.5
    answer_unparsable: float = -2.0  # also the answer part when the format check fails


DEFAULT_SCHEME = MaaRewardScheme()


@functools.lru_cache(maxsize=None)
def _family(name: str) -> TaskFamily:
    return get_family(name)


def score_maa(
    family: str, assistant_turn: str, solution_text: str, scheme: MaaRewardScheme = DEFAULT_SCHEME
) -> RewardResult:
    """Score one whole assistant turn (pre-filled `<think>` included) against the gold text.

    Raises `UnknownTaskError` only for an unknown `family`; any response text is scored.
    """
    checker = _family(family)
    format_ok = check_format(assistant_turn)
    answer = extract_answer(assistant_turn)
    if not format_ok:
        return RewardResult(scheme.format_bad + scheme.answer_unparsable, False, None, answer)
    correct = None if answer is None else checker.answers_match(answer, str(solution_text))
    if correct is None:
        part = scheme.answer_unparsable
    else:
        part = scheme.answer_correct if correct else scheme.answer_wrong
    return RewardResult(scheme.format_ok + part, True, correct, answer)


def maa_reward(scheme: MaaRewardScheme = DEFAULT_SCHEME) -> RewardFn:
    """A registry-shaped reward function with a custom scheme."""

    def reward(task: Task, assistant_turn: str) -> RewardResult:
        return score_maa(task.family, assistant_turn, task.solution_text, scheme)

    return reward


@register_reward("maa")
def maa(task: Task, assistant_turn: str) -> RewardResult:
    """The MAA reward with the released code's scheme (totals 3 / -0.5 / -1 / -3)."""
    return score_maa(task.family, assistant_turn, task.solution_text, DEFAULT_SCHEME)
