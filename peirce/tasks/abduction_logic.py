"""Premise syntax and exact entailment for the abduction family.

A premise is `(<body>) => X`: if the body holds, atom X holds. Bodies use AND, OR and
NOT, fully parenthesised and binary, as in the reference data. A goal is *reachable*
when it is entailed: true in every truth assignment that makes all known atoms true and
satisfies every premise.

Why a search and not forward chaining: with NOT in bodies, forward chaining is unsound
(it treats "not derived" as false) and incomplete (it cannot reason by cases, e.g.
`(A AND B) => G` and `(A AND (NOT B)) => G` entail G from A). `entails` is exact.

Formulas are nested tuples, which keeps evaluation cheap: an atom is a `str`,
`("NOT", f)`, `("AND", a, b)`, `("OR", a, b)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

Formula = Union[str, tuple]  # str | ("NOT", F) | ("AND"|"OR", F, F)
Premise = tuple[Formula, str]  # (body, head)

KEYWORDS = frozenset({"AND", "OR", "NOT"})
_ATOM_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TOKEN_RE = re.compile(r"\s*(\(|\)|[A-Za-z][A-Za-z0-9_]*|\S)")
_MAX_PREMISE_CHARS = 100_000
_MAX_DEPTH = 200


# ---------------------------------------------------------------- rendering


def render(f: Formula) -> str:
    """Reference rendering: `(NOT x)`, `(a AND b)`, `(a OR b)`, atoms bare."""
    if type(f) is str:
        return f
    if f[0] == "NOT":
        return "(NOT " + render(f[1]) + ")"
    return "(" + render(f[1]) + " " + f[0] + " " + render(f[2]) + ")"


def render_premise(body: Formula, head: str) -> str:
    return "(" + render(body) + ") => " + head


# ---------------------------------------------------------------- parsing


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # only trailing whitespace left
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_formula(text: str) -> Formula:
    """Parse a fully parenthesised formula; any nesting depth up to a sanity bound.

    Accepts `(a OP b OP c)` chains with one operator (left-associated) so that
    hand-written input is not rejected for a missing pair of brackets."""
    if len(text) > _MAX_PREMISE_CHARS:
        raise ValueError(f"formula too long: {len(text)} chars (max {_MAX_PREMISE_CHARS})")
    toks = _tokens(text)
    if not toks:
        raise ValueError("empty formula")
    f, i = _parse(toks, 0, 0, text)
    if i != len(toks):
        raise ValueError(f"unexpected token {toks[i]!r} after formula in {text!r}")
    return f


def _parse(toks: list[str], i: int, depth: int, text: str) -> tuple[Formula, int]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"formula nested deeper than {_MAX_DEPTH} in {text[:80]!r}...")
    if i >= len(toks):
        raise ValueError(f"formula ends early: {text!r}")
    t = toks[i]
    if t == "(":
        if i + 1 < len(toks) and toks[i + 1] == "NOT":
            sub, j = _parse(toks, i + 2, depth + 1, text)
            return ("NOT", sub), _expect(toks, j, ")", text)
        left, j = _parse(toks, i + 1, depth + 1, text)
        op = None
        while j < len(toks) and toks[j] in ("AND", "OR"):
            if op is not None and toks[j] != op:
                raise ValueError(f"mixed AND/OR without brackets in {text!r}")
            op = toks[j]
            right, j = _parse(toks, j + 1, depth + 1, text)
            left = (op, left, right)
        return left, _expect(toks, j, ")", text)
    if t in KEYWORDS:
        raise ValueError(f"keyword {t!r} where an atom or '(' was expected in {text!r}")
    if _ATOM_RE.fullmatch(t) is None:
        raise ValueError(f"unexpected token {t!r} in {text!r}")
    return t, i + 1


def _expect(toks: list[str], i: int, tok: str, text: str) -> int:
    if i >= len(toks) or toks[i] != tok:
        got = toks[i] if i < len(toks) else "end of text"
        raise ValueError(f"expected {tok!r}, got {got!r} in {text!r}")
    return i + 1


def parse_premise(text: str) -> Premise:
    """`(<body>) => X` -> (body, "X")."""
    body_text, sep, head = text.rpartition("=>")
    if not sep:
        raise ValueError(f"premise without '=>': {text!r}")
    head = head.strip()
    if _ATOM_RE.fullmatch(head) is None or head in KEYWORDS:
        raise ValueError(f"premise head {head!r} is not an atom in {text!r}")
    return parse_formula(body_text), head


# ---------------------------------------------------------------- semantics


def atoms_of(f: Formula, out: set[str] | None = None) -> set[str]:
    out = set() if out is None else out
    stack = [f]
    while stack:
        g = stack.pop()
        if type(g) is str:
            out.add(g)
        else:
            stack.extend(g[1:])
    return out


def evaluate(f: Formula, a: Mapping[str, bool]) -> bool | None:
    """Kleene three-valued value of `f` under a partial assignment (missing = unknown).
    True/False means every completion of `a` gives that value."""
    if type(f) is str:
        return a.get(f)
    op = f[0]
    if op == "NOT":
        v = evaluate(f[1], a)
        return None if v is None else not v
    left = evaluate(f[1], a)
    if op == "AND":
        if left is False:
            return False
        right = evaluate(f[2], a)
        if right is False:
            return False
        return True if (left and right) else None
    if left is True:
        return True
    right = evaluate(f[2], a)
    if right is True:
        return True
    return False if (left is False and right is False) else None


def watch_lists(premises: Sequence[Premise]) -> dict[str, list[int]]:
    """Atom -> indices of the premises whose body mentions it."""
    watch: dict[str, list[int]] = {}
    for i, (body, _) in enumerate(premises):
        for atom in atoms_of(body):
            watch.setdefault(atom, []).append(i)
    return watch


def forward_closure(
    premises: Sequence[Premise],
    start: Mapping[str, bool],
    watch: Mapping[str, list[int]],
    on_derive: Callable[[str, int, dict[str, bool]], None] | None = None,
) -> dict[str, bool]:
    """`start` plus every head whose body becomes True (three-valued, unknown atoms stay
    unknown), so sound: what it adds holds in every model extending `start`. Worklist: a
    premise is re-checked only when an atom of its body becomes True. `on_derive(head,
    premise index, assignment)` is called as each head is added (the assignment as it was
    when the body held, for explanations)."""
    a = dict(start)
    todo = list(range(len(premises)))
    while todo:
        i = todo.pop()
        body, head = premises[i]
        if head not in a and evaluate(body, a) is True:
            if on_derive is not None:
                on_derive(head, i, a)
            a[head] = True
            todo.extend(watch.get(head, ()))
    return a


class Theory:
    """Known atoms + premises, preprocessed once so that many goals are cheap to check."""

    def __init__(self, premises: Iterable[Premise], known: Iterable[str]):
        self.premises = list(premises)
        self.by_head: dict[str, list[Formula]] = {}
        for body, head in self.premises:
            self.by_head.setdefault(head, []).append(body)
        self.known = frozenset(known)
        self.watch = watch_lists(self.premises)
        # atoms true in every model, by sound forward chaining from the known atoms
        self.fixed = forward_closure(self.premises, dict.fromkeys(self.known, True), self.watch)

    def countermodel(self, goal: str) -> dict[str, bool] | None:
        """A model with `goal` False, or None when `goal` is entailed. Atoms missing from the
        returned assignment are True in it (see `_model_exists`)."""
        if self.fixed.get(goal):
            return None
        return self._model_exists(dict(self.fixed), [(False, goal)], [])

    def entails(self, goal: str) -> bool:
        """True iff `goal` holds in every model (no model with goal false exists)."""
        return self.countermodel(goal) is None

    def _model_exists(
        self, a: dict[str, bool], todo: list[tuple[bool, Formula]], branches: list[tuple[bool, Formula]]
    ) -> dict[str, bool] | None:
        """Signed tableau: a model extending `a` giving each formula in `todo` its sign, or
        None when there is none. Atoms left unassigned at the end are set True, which satisfies every
        premise whose head they are; so only an atom set False brings obligations (all
        its bodies False). Conjunctive cases (F-OR, T-AND, NOT) are expanded at once;
        disjunctive ones (F-AND, T-OR) wait in `branches` and are split only if the
        assignment has not already decided them."""
        by_head = self.by_head
        while True:
            while todo:
                sign, f = todo.pop()
                if type(f) is str:
                    v = a.get(f)
                    if v is None:
                        a[f] = sign
                        if not sign:
                            todo.extend((False, body) for body in by_head.get(f, ()))
                    elif v is not sign:
                        return None
                elif f[0] == "NOT":
                    todo.append((not sign, f[1]))
                elif (f[0] == "OR") is not sign:  # F-OR, T-AND: both parts
                    todo.append((sign, f[1]))
                    todo.append((sign, f[2]))
                else:
                    branches.append((sign, f))
            while branches:
                sign, f = branches.pop()
                v = evaluate(f, a)
                if v is None:
                    break
                if v is not sign:
                    return None
            else:
                return a
            for part in _branch_order(f):
                model = self._model_exists(dict(a), [(sign, part)], list(branches))
                if model is not None:
                    return model
            return None


def _branch_order(f: tuple) -> tuple[Formula, Formula]:
    """Try a negated part first: falsifying `NOT x` sets x True, which adds no obligations."""
    left, right = f[1], f[2]
    if type(right) is not str and right[0] == "NOT" and (type(left) is str or left[0] != "NOT"):
        return right, left
    return left, right


def reachability(
    premises: Sequence[Premise], known: Iterable[str], goals: Sequence[str]
) -> list[bool]:
    """Entailment of each goal; the pure core that `solve` and the generator share."""
    theory = Theory(premises, known)
    return [theory.entails(g) for g in goals]
