"""Science reward: the chosen letter (last \\boxed{X} or "Answer: X") against the gold letter."""

from __future__ import annotations

import pytest

from peirce.rewards.registry import get_reward
from peirce.rewards.science import extract_choice
from peirce.tasks.domain import science_task


def _task(answer="B", choices=("w", "x", "y", "z")):
    return science_task("Which?", list(choices), answer, id="sci-t-0", split="test")


@pytest.mark.parametrize(
    "text, letter",
    [
        ("\\boxed{B}", "B"),
        ("\\boxed{\\text{C}}", "C"),
        ("\\boxed{(d)}", "D"),
        ("\\boxed{A) water}", "A"),
        ("Answer: C", "C"),
        ("The answer is (B).", "B"),
        ("Answer: A. Wait, actually \\boxed{C}", "C"),
        ("\\boxed{B} ... Final Answer: D", "D"),
        ("the answer is a prime", None),
        ("\\boxed{Bob}", None),
        ("nothing", None),
    ],
)
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_gold_letter_scores_one_and_others_zero():
    fn = get_reward("science")
    assert fn(_task("B"), "so \\boxed{B}").reward == 1.0
    r = fn(_task("B"), "so \\boxed{C}")
    assert (r.reward, r.correct, r.format_ok) == (0.0, False, True)


def test_letter_outside_choices_is_no_answer():
    r = get_reward("science")(_task("A", choices=("p", "q", "r")), "\\boxed{D}")
    assert (r.reward, r.format_ok, r.correct, r.answer) == (0.0, False, None, "D")


def test_bad_gold_names_field():
    task = science_task("Which?", ["a", "b"], "C", id="sci-bad", split="test")
    with pytest.raises(ValueError, match="puzzle.answer"):
        get_reward("science")(task, "\\boxed{A}")
