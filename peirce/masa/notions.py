"""The notion part of the meta reward: do the predicted notions show up in the solutions
that succeeded more than in those that failed?

Matching is a case-sensitive substring test on the response text (as in the released
code), after a crude singularisation so "prime numbers" also matches "prime number".
"""

from __future__ import annotations

from collections.abc import Sequence

from peirce.masa.types import Solution

_ES_ENDINGS = ("ches", "shes", "xes", "zes", "oes")


def singularise(notion: str) -> str:
    """The regular-English singular of a notion's last word; suffixes compare case-insensitively.

    ies -> y ("identities" -> "identity"); ches/shes/xes/zes/oes lose "es" ("matches" ->
    "match"); otherwise a final s is dropped ("medians" -> "median") unless the word ends in
    ss ("class"). A last word "series" is left alone by every rule (the released code only
    exempts a notion that *is* "series", so "arithmetic series" became "arithmetic sery").
    """
    last = notion.rsplit(None, 1)[-1].lower() if notion.strip() else ""
    if last == "series":
        return notion
    if last.endswith("ies"):
        return notion[:-3] + "y"
    if last.endswith(_ES_ENDINGS):
        return notion[:-2]
    if last.endswith("s") and not last.endswith("ss"):
        return notion[:-1]
    return notion


def scored_notions(notions: Sequence[str], problem: str) -> list[str]:
    """The notions that count: singularised, duplicates once (first kept), and those that
    already occur in the problem text dropped (naming them needs no insight)."""
    kept: dict[str, None] = {}
    for n in notions:
        s = singularise(n)
        if s and s not in problem:
            kept.setdefault(s)
    return list(kept)


def notion_score(notions: Sequence[str] | None, problem: str, solutions: Sequence[Solution]) -> float:
    """Mean over the scored notions of 1[#correct solutions containing it > #incorrect
    containing it]; 0 for no notions (None, empty, or all in the problem)."""
    if not notions:
        return 0.0
    counted = scored_notions(notions, problem)
    if not counted:
        return 0.0
    hits = 0
    for n in counted:
        balance = sum(1 if s.correct else -1 for s in solutions if n in s.response)
        hits += balance > 0
    return hits / len(counted)
