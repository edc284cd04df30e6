"""DAPO overlong filtering: which samples leave the loss because the engine cut them off.

One predicate shared by the learner (which zeroes their loss mask) and the planner (which
filters a group with nothing left under the loss, so no batch reaches the learner empty).
"""

from __future__ import annotations

from collections.abc import Sequence

from peirce.masa.ids import is_meta_group
from peirce.transport.wire import ScoredSample


def overlong(s: ScoredSample) -> bool:
    """A solution sample the engine stopped at its max_tokens.

    MASA meta samples never are: a meta rollout that overruns meta_max_tokens has broken the
    format its reward scores, and that low reward is the signal that teaches the format."""
    return s.sample.finish_reason == "length" and not is_meta_group(s.sample.group_id)


def all_overlong(scored: Sequence[ScoredSample]) -> bool:
    """Every sample of the group is masked: it would add nothing to the loss."""
    return bool(scored) and all(overlong(s) for s in scored)
