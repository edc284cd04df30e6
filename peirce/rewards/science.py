"""Science (multiple-choice) reward: 1.0 when the chosen letter is the gold letter.

The choice is whichever comes last in the response: the last `\\boxed{X}` (also
`\\boxed{\\text{X}}`, `\\boxed{(X)}`, `\\boxed{X) ...}`) or the last "Answer: X" /
"answer is (X)". A letter outside the task's choices counts as no answer.
"""

from __future__ import annotations

import re
import string

from peirce.rewards.math import last_boxed
from peirce.rewards.registry import RewardResult, register_reward
from peirce.tasks.base import Task

# An upper-case letter after "answer", optional "is"/":"; no nested quantifiers, so linear time.
_ANSWER_RE = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?[:：]?\s*\(?\s*([A-Z])(?![A-Za-z])")
_BOX_LETTER_RE = re.compile(r"\(?\s*([A-Za-z])\s*\)?(?:[\s.:)].*)?", re.DOTALL)
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")


def choice_letters(n: int) -> str:
    if not 2 <= n <= 26:
        raise ValueError(f"a multiple-choice task needs 2..26 choices, got {n}")
    return string.ascii_uppercase[:n]


def _boxed_letter(content: str) -> str | None:
    content = _TEXT_WRAP_RE.sub(r"\1", content[:200]).strip()
    m = _BOX_LETTER_RE.fullmatch(content)
    return m.group(1).upper() if m else None


def extract_choice(text: str) -> str | None:
    """The chosen letter (upper case), or None. Boxed vs "Answer:" - the later one wins."""
    if not isinstance(text, str):
        return None
    candidates: list[tuple[int, str]] = []
    boxed = last_boxed(text)
    if boxed is not None:
        letter = _boxed_letter(boxed)
        if letter is not None:
            candidates.append((max(text.rfind("\\boxed"), text.rfind("\\fbox")), letter))
    last = None
    for last in _ANSWER_RE.finditer(text):
        pass
    if last is not None:
        candidates.append((last.start(), last.group(1).upper()))
    return max(candidates)[1] if candidates else None


def gold_letter(task: Task) -> tuple[str, str]:
    """(gold letter, valid letters) from the task; ValueError names the bad field."""
    choices = task.puzzle.get("choices")
    valid = choice_letters(len(choices)) if isinstance(choices, list) and choices else "ABCD"
    gold = task.puzzle.get("answer")
    if not isinstance(gold, str) or gold.strip().upper() not in valid:
        raise ValueError(f"science task {task.id!r}: puzzle.answer must be one of {list(valid)}, got {gold!r}")
    return gold.strip().upper(), valid


def score_science(task: Task, assistant_turn: str) -> RewardResult:
    gold, valid = gold_letter(task)
    letter = extract_choice(assistant_turn)
    if letter is None or letter not in valid:
        return RewardResult(reward=0.0, format_ok=False, correct=None, answer=letter)
    ok = letter == gold
    return RewardResult(reward=1.0 if ok else 0.0, format_ok=True, correct=ok, answer=letter)


@register_reward("science")
def science(task: Task, assistant_turn: str) -> RewardResult:
    """+1 when the chosen letter (last \\boxed{X} or "Answer: X") is the gold letter, else 0."""
    return score_science(task, assistant_turn)
