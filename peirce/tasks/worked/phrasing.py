"""Template choice and completion assembly shared by the worked-solution writers.

Several phrasings per step keep a model from memorising one string. A fixed `variant`
gives every step its variant-th template (one consistent style per variant, so variants
of one puzzle always differ in the opening line); an `rng` draws each step's template.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from peirce.rewards.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

N_VARIANTS = 3  # every template tuple has this many entries (or fewer, then reused cyclically)
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


class Phrasing:
    """Which template each step uses; deterministic given `variant` or the `rng` state."""

    def __init__(self, variant: int | None = None, rng: random.Random | None = None):
        if variant is not None and rng is not None:
            raise ValueError("pass variant or rng, not both")
        if variant is not None and (isinstance(variant, bool) or not isinstance(variant, int)
                                    or not 0 <= variant < N_VARIANTS):
            raise ValueError(f"variant must be an int in 0..{N_VARIANTS - 1}, got {variant!r}")
        self.variant = 0 if variant is None and rng is None else variant
        self.rng = rng

    def pick(self, templates: Sequence[str]) -> str:
        if self.rng is not None:
            return templates[self.rng.randrange(len(templates))]
        return templates[self.variant % len(templates)]

    def say(self, templates: Sequence[str], **fields: object) -> str:
        return self.pick(templates).format(**fields)


def join_names(items: Sequence[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalise(line: str) -> str:
    """First letter upper case; the rest (atom and variable names) untouched."""
    return line[:1].upper() + line[1:]


def completion(lines: Sequence[str], answer: str) -> str:
    """`\\n<trace>\\n</think>\\n<answer>\\n<answer text>\\n</answer>`: what follows the
    pre-filled `<think>`. A tag inside the trace would break the one-of-each format rule, so
    it is refused (puzzle text that slipped one through the parsers lands here)."""
    trace = "\n".join(lines)
    for tag in _TAGS:
        if tag in trace or tag in answer:
            raise ValueError(f"worked solution would contain the tag {tag!r} outside its place")
    return f"\n{trace}\n{THINK_CLOSE}\n{ANSWER_OPEN}\n{answer.strip()}\n{ANSWER_CLOSE}"
