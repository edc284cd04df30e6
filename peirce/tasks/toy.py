"""A toy task with a dense, verifiable reward, for proving the RL loop learns.

"uppercase": any prompt; the reward is the fraction of letters in the response that
are upper case. A random model starts near its vocabulary's base rate and a working
gradient raises it within a few steps, even for a tiny random Llama: if mean reward
does not rise, the loss sign, the advantages, the weight sync or the sampling is wrong.
"""

from __future__ import annotations

import random
from typing import Any

from peirce.tasks.base import Task, TaskFamily, register_family
from peirce.tasks.prompts import RenderedPrompt

_PROMPTS = ("Write a few words.", "Say something.", "Reply briefly.", "Write anything.")


@register_family
class Uppercase(TaskFamily):
    name = "uppercase"
    levels = (1,)

    def generate_one(self, level: int, rng: random.Random) -> tuple[dict[str, Any], str, str] | None:
        prompt = f"{rng.choice(_PROMPTS)} (#{rng.randrange(10**9)})"
        return {"prompt": prompt}, prompt, ""

    def solve(self, puzzle_text: str) -> str:
        return "ALL CAPS"

    def parse_answer(self, answer: str) -> Any | None:
        return uppercase_fraction(answer)

    def render(self, task: Task, style: str, tokenizer: Any = None) -> RenderedPrompt:
        return RenderedPrompt(text=f"User: {task.puzzle_text}\nAssistant:", prefill="")


def uppercase_fraction(text: str) -> float:
    letters = [c for c in text[:100_000] if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
