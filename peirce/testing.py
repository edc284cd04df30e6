"""Helpers for testing reward functions and task families (yours or peirce's).

A test of a verifier needs the three canonical responses to a puzzle: the gold answer
as a model would give it after the pre-filled `<think>`, a well-formed wrong answer and
an answer without tags. They live here so every test (and a user's own family) builds
them the same way.
"""

from __future__ import annotations


def wrap_response(answer: str, thought: str = "reasoning") -> str:
    """The whole assistant turn answering `answer` (a closed `<think>` then `<answer>`)."""
    return f"<think>{thought}</think>\n<answer>\n{answer}</answer>"


def wrong_answer(gold: str) -> str:
    """A well-formed, wrong answer: every judgement flipped (consistently when a goal
    repeats), or one added to an integer."""
    g = gold.strip()
    if g.lstrip("-").isdigit():
        return str(int(g) + 1)
    flipped = g.replace("unreachable", "\0").replace("reachable", "unreachable").replace("\0", "reachable")
    flipped = flipped.replace("True", "\0").replace("False", "True").replace("\0", "False")
    if flipped == g:
        raise ValueError(f"cannot make a wrong answer from {gold!r}: no integer, True/False or reachable")
    return flipped
