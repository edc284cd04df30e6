"""The typed values MASA's pure functions pass around (msgspec: they also travel and resume)."""

from __future__ import annotations

import msgspec


class Solution(msgspec.Struct, frozen=True):
    """One scored solution rollout of a prompt: what the meta reward is measured against.

    correct: the task's verdict (a driver maps an unjudged `RewardResult.correct=None` to False).
    length: response tokens (the length the meta rollout predicts).
    """

    response: str
    correct: bool
    length: int


class MetaPrediction(msgspec.Struct, frozen=True, kw_only=True):
    """What one meta rollout predicted. A field is None when it is missing or of the wrong
    type (see peirce.masa.parse for the exact rules); a None part scores 0.

    found: a JSON object with at least one known key was found.
    reasoning: the text inside the first <meta>...</meta> (None without one).
    """

    found: bool = False
    notions: tuple[str, ...] | None = None
    pass_rate: int | None = None
    solution_length: int | None = None
    reasoning: str | None = None


class MetaReward(msgspec.Struct, frozen=True):
    """The meta reward and its three parts, each in [0, 1]; reward is their mean."""

    reward: float
    length: float
    pass_rate: float
    notions: float
