"""Expert behaviour cloning: each prompt's best meta trajectory, corrected by what the
solutions showed, becomes a (prompt, target text) pair for an SFT step.

The target keeps the trajectory's reasoning and notions and rewrites the two numbers with
the truth: pass_rate = round(K x share of correct solutions), an integer count out of K
as the prompt asks (the released code writes the fraction), and solution_length = the
mean length of the *correct* solutions (the released code divides the correct lengths'
sum by all rollouts, which shrinks it by the pass rate). Without a correct solution there
is no true length and the predicted one is kept (or left out when there was none).
Rounding is half up. The JSON is `json.dumps` (the released code wrote a Python dict repr).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence

import msgspec

from peirce.masa.config import ExpertConfig
from peirce.masa.reward import true_pass_fraction
from peirce.masa.types import MetaPrediction, MetaReward, Solution


class ExpertExample(msgspec.Struct, frozen=True):
    """prompt: the meta prompt's user text; target: the assistant text to clone;
    score: the meta reward of the trajectory it came from; step: the learner step."""

    prompt_id: str
    prompt: str
    target: str
    score: float
    step: int


def true_pass_count(solutions: Sequence[Solution], k: int) -> int | None:
    fraction = true_pass_fraction(solutions)
    return None if fraction is None else int(fraction * k + 0.5)


def mean_correct_length(solutions: Sequence[Solution]) -> int | None:
    lengths = [s.length for s in solutions if s.correct]
    return int(sum(lengths) / len(lengths) + 0.5) if lengths else None


def rewritten_target(prediction: MetaPrediction, solutions: Sequence[Solution], k: int) -> str:
    """`<meta>reasoning</meta>` and the JSON object with the true pass count and length."""
    obj: dict[str, object] = {"notions": list(prediction.notions or ()), "pass_rate": true_pass_count(solutions, k)}
    length = mean_correct_length(solutions)
    length = length if length is not None else prediction.solution_length
    if length is not None:
        obj["solution_length"] = length
    return f"<meta>{prediction.reasoning or ''}</meta>\n{json.dumps(obj, ensure_ascii=False)}"


def best_expert(prompt_id: str, prompt: str, scored: Sequence[tuple[MetaPrediction, MetaReward]],
                solutions: Sequence[Solution], *, k: int, min_score: float, step: int) -> ExpertExample | None:
    """The highest-reward meta trajectory (first on ties) that parsed and scored >= min_score,
    rewritten; None when there is none or no solution to take the truth from."""
    if not solutions:
        return None
    best: tuple[MetaPrediction, MetaReward] | None = None
    for prediction, reward in scored:
        if prediction.found and reward.reward >= min_score and (best is None or reward.reward > best[1].reward):
            best = (prediction, reward)
    if best is None:
        return None
    return ExpertExample(prompt_id=prompt_id, prompt=prompt, target=rewritten_target(best[0], solutions, k),
                         score=best[1].reward, step=step)


class ExpertBuffer:
    """A bounded FIFO of expert examples (the oldest drop out), drained by each SFT step."""

    def __init__(self, cfg: ExpertConfig, examples: Iterable[ExpertExample] = ()) -> None:
        self._every = cfg.every
        self._items: deque[ExpertExample] = deque(examples, maxlen=cfg.buffer_size)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, example: ExpertExample | None) -> None:
        if example is not None:
            self._items.append(example)

    def due(self, step: int) -> bool:
        """An SFT step is due after learner step `step` (every N steps, with something to train)."""
        return step >= 1 and step % self._every == 0 and bool(self._items)

    def take(self) -> list[ExpertExample]:
        """Everything buffered, oldest first; the buffer is empty afterwards (each example trains once)."""
        out = list(self._items)
        self._items.clear()
        return out

    def snapshot(self) -> tuple[ExpertExample, ...]:
        """The buffered examples for a checkpoint; `ExpertBuffer(cfg, snapshot)` restores them."""
        return tuple(self._items)
