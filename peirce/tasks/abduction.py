"""Abduction: is each goal reachable (entailed) from the known atoms through the premises?

Reference format (MAA released data): `premises: [...]`, `known_atoms: [...]`,
`goals: [...]`, one instruction line; answer lines `(i) G is reachable|unreachable`.

Why this generator differs from the released one: there, every reachable goal is itself a
known atom and no unreachable goal is, so membership alone answers the puzzle. Here a goal
is never a known atom, every goal is the head of at least one premise, and a goal is
reachable only through a chain of premises 2-7 deep (by level) whose bodies mix AND, OR
and NOT, including case splits (`(s AND c) => X`, `(s AND (NOT c)) => X`) that forward
chaining alone cannot follow. Unreachable goals come from the same chain builder with the
last 1-2 premises or the leaf known atom removed, so their surface looks the same, and a
goal's occurrences in bodies (place, polarity) are drawn independently of its label.
Labels hold by construction (a counter-model argument, see `_Builder`) and the exact
solver in `abduction_logic` re-checks every candidate; a disagreement would be a bug and
the candidate is dropped (never observed).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from peirce.tasks.abduction_logic import (
    KEYWORDS,
    Formula,
    Premise,
    parse_premise,
    reachability,
    render_premise,
)
from peirce.tasks.base import TaskFamily, register_family

INSTRUCTION = (
    "For each goal, first assume it is true and determine what conditions must be satisfied. "
    "Identify which premises directly lead to these goals, then trace back what must be "
    "established to satisfy those premises. Finally, check whether the known atoms can lead "
    "to these conditions"
)

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PAIRS = tuple(a + b for a in _LETTERS for b in _LETTERS if a + b not in KEYWORDS)


@dataclass(frozen=True)
class LevelSpec:
    depth: tuple[int, int]  # premises from a known atom up to a goal
    distractors: tuple[int, int]
    free_atoms: int  # atoms that are neither known nor derivable (noise, case-split pivots)
    extra_known: tuple[int, int]  # known atoms used by no chain


LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec((2, 3), (3, 4), 2, (0, 1)),
    2: LevelSpec((3, 4), (4, 6), 3, (0, 2)),
    3: LevelSpec((4, 5), (6, 8), 3, (1, 2)),
    4: LevelSpec((5, 6), (8, 10), 4, (1, 3)),
    5: LevelSpec((6, 7), (10, 12), 4, (1, 3)),
}
GOALS_PER_PUZZLE = (2, 4)
P_CASE_SPLIT = 0.15  # per chain premise: two premises splitting on a free atom
P_CYCLE = 0.2  # OR-noise that reuses an ancestor in the chain (a cycle)
P_DISTRACTOR_ON_GOAL = 0.2


# ---------------------------------------------------------------- text format


def render_puzzle(puzzle: dict[str, Any]) -> str:
    return (
        f"premises: {list(puzzle['premises'])!r}\n"
        f"known_atoms: {list(puzzle['known_atoms'])!r}\n"
        f"goals: {list(puzzle['goals'])!r}\n"
        f"{INSTRUCTION}"
    )


def render_solution(goals: list[str], reachable: list[bool]) -> str:
    return "\n".join(
        f"({i}) {g} is {'reachable' if r else 'unreachable'}"
        for i, (g, r) in enumerate(zip(goals, reachable), 1)
    )


_LIST_RE = re.compile(r"\[((?:'[^'\\\n]*'(?:, '[^'\\\n]*')*)?)\]")
_ITEM_RE = re.compile(r"'([^'\\\n]*)'")


def _parse_list(line: str, key: str) -> list[str]:
    prefix = key + ": "
    if not line.startswith(prefix):
        raise ValueError(f"expected a line starting with {prefix!r}, got {line[:60]!r}")
    body = line[len(prefix):].rstrip()
    if _LIST_RE.fullmatch(body) is None:
        raise ValueError(f"{key}: not a list of quoted strings: {body[:80]!r}")
    return _ITEM_RE.findall(body)


def parse_puzzle_text(text: str) -> dict[str, Any]:
    """Reference text -> {"premises", "known_atoms", "goals"} (strings); ValueError naming
    the bad line or item."""
    if not isinstance(text, str):
        raise ValueError(f"puzzle_text must be str, got {type(text).__name__}")
    lines = text.split("\n")
    if len(lines) < 3:
        raise ValueError(f"puzzle_text needs premises/known_atoms/goals lines, got {len(lines)} line(s)")
    puzzle = {
        "premises": _parse_list(lines[0], "premises"),
        "known_atoms": _parse_list(lines[1], "known_atoms"),
        "goals": _parse_list(lines[2], "goals"),
    }
    for key in ("known_atoms", "goals"):
        for atom in puzzle[key]:
            if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", atom) is None or atom in KEYWORDS:
                raise ValueError(f"{key}: {atom!r} is not an atom name")
    if not puzzle["goals"]:
        raise ValueError("goals: empty list")
    return puzzle


_MAX_PREMISES = 5_000


def parse_premises(texts: list[str], max_premises: int = _MAX_PREMISES) -> list:
    """Parse premise texts; a ValueError names the first bad one (or too many of them)."""
    if len(texts) > max_premises:
        raise ValueError(f"premises: {len(texts)} items (max {max_premises})")
    premises = []
    for i, p in enumerate(texts):
        try:
            premises.append(parse_premise(p))
        except ValueError as exc:
            raise ValueError(f"premises[{i}]: {exc}") from None
    return premises


def solve_puzzle(puzzle: dict[str, Any]) -> str:
    """Exact labels for a parsed puzzle, rendered in the reference answer format."""
    premises = parse_premises(puzzle["premises"])
    goals = list(puzzle["goals"])
    try:
        labels = reachability(premises, puzzle["known_atoms"], goals)
    except RecursionError:
        raise ValueError("puzzle too large to solve (search nested too deep)") from None
    return render_solution(goals, labels)


# ---------------------------------------------------------------- answers

_ANSWER_LINE = re.compile(
    r"^[ \t]*\((\d{1,4})\)[ \t]*([A-Za-z][A-Za-z0-9_]{0,31})[ \t]+is[ \t]+(reachable|unreachable)"
    r"[ \t]*\.?[ \t]*(?:</answer>)?[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_MAX_ANSWER_CHARS = 1 << 20


def parse_answer_text(text: Any) -> dict[str, bool] | None:
    """Answer lines -> {goal: reachable}; None when there is no such line, a goal gets
    two different verdicts, or the input is not a string. Linear time (no nested
    quantifiers; at most 1 MiB is scanned)."""
    if not isinstance(text, str):
        return None
    out: dict[str, bool] = {}
    for m in _ANSWER_LINE.finditer(text[:_MAX_ANSWER_CHARS]):
        goal, verdict = m.group(2), m.group(3).lower() == "reachable"
        if out.setdefault(goal, verdict) != verdict:
            return None
    return out or None


# ---------------------------------------------------------------- generator


class _Builder:
    """One candidate puzzle under construction; all randomness from `rng`.

    Labels hold by construction, through an intended counter-model M: known atoms and
    atoms of reachable chains are True in M, atoms of (broken) unreachable chains are
    False, free atoms get a random value. Every body whose head is False in M is built
    False in M (its support is False in M, and OR-noise always contains an *anchor*: a
    free-atom literal False in M), so M satisfies every premise and no unreachable goal
    is entailed. A reachable chain bottoms out in a known atom and its side conditions
    are known or already derivable, so its goal is entailed. The exact solver re-checks.

    Goals enter bodies only through cycles, case-split pivots and `any_literal` (random
    atom), so where and how a goal occurs says nothing about its label.
    """

    def __init__(self, spec: LevelSpec, rng: random.Random):
        self.spec, self.rng = spec, rng
        self.used: set[str] = set()
        self.premises: list[Premise] = []
        self.known: list[str] = []
        self.derivable: list[str] = []  # non-goal atoms of finished reachable chains
        # free atoms: neither known nor derivable; noise anchors and case-split pivots
        self.free = [self.new_atom() for _ in range(spec.free_atoms)]
        self.free_true = {a for a in self.free if rng.random() < 0.5}  # their value in M
        self.free_false = [a for a in self.free if a not in self.free_true]
        if not self.free_false:
            self.free.append(self.new_atom())
            self.free_false.append(self.free[-1])
        self.all_atoms: list[str] = []  # filled once every chain atom is named

    def new_atom(self) -> str:
        rng = self.rng
        while True:
            if rng.random() < 0.7:
                name = _LETTERS[rng.randrange(26)]
            else:
                name = _PAIRS[rng.randrange(len(_PAIRS))]
            if name not in self.used:
                self.used.add(name)
                return name

    def add_known(self, atom: str) -> str:
        self.known.append(atom)
        return atom

    def side_condition(self) -> str:
        """Usually an existing known atom, sometimes a new one, sometimes an atom a
        finished reachable chain derives (so chains interlock)."""
        rng = self.rng
        r = rng.random()
        if self.derivable and r < 0.25:
            return rng.choice(self.derivable)
        if self.known and r < 0.7:
            return rng.choice(self.known)
        return self.add_known(self.new_atom())

    def anchor(self, depth: int) -> Formula:
        """A literal False in M over a free atom: `f` if f is False in M, else `NOT f`.
        Free atoms are never goals, so the polarity says nothing about any goal."""
        rng = self.rng
        if depth == 0:
            return rng.choice(self.free_false)
        atom = rng.choice(self.free)
        return ("NOT", atom) if atom in self.free_true else atom

    def any_literal(self, negate_ok: bool) -> Formula:
        """Any atom, either polarity: goals appear in bodies regardless of their label."""
        atom = self.rng.choice(self.all_atoms)
        return ("NOT", atom) if negate_ok and self.rng.random() < 0.5 else atom

    def noise(self, depth: int, cycle: list[str]) -> Formula:
        """At most `depth` operators deep, False in M (given `cycle` atoms share the
        head's M value): an anchor, a positive ancestor (a cycle), or an anchor AND any
        literal."""
        rng = self.rng
        if cycle and rng.random() < P_CYCLE:
            return rng.choice(cycle)
        if depth >= 1 and rng.random() < 0.4:
            pair = (self.anchor(0), self.any_literal(depth >= 2))
            return ("AND", *pair) if rng.random() < 0.5 else ("AND", pair[1], pair[0])
        return self.anchor(depth)

    def body(self, support: Formula, depth: int, cycle: list[str]) -> Formula:
        """A body at most `depth` operators above `support` that holds whenever `support`
        does, and is False in M when `support` is."""
        rng = self.rng
        if depth == 0 or rng.random() < 0.3:
            return support
        sub = self.body(support, depth - 1, cycle)
        if rng.random() < 0.5:
            if depth == 1 or rng.random() < 0.6:
                other: Formula = self.side_condition()
            else:
                other = ("AND", self.side_condition(), self.side_condition())
            op = "AND"
        else:
            other, op = self.noise(depth - 1, cycle), "OR"
        return (op, sub, other) if rng.random() < 0.5 else (op, other, sub)

    def chain(self, atoms: list[str], reachable: bool) -> None:
        """Premises atoms[-1] -> ... -> atoms[1] -> atoms[0] (the goal). Reachable: the
        last atom is known. Unreachable: it is not, or the last 1-2 premises are gone
        (never the goal's own premise)."""
        rng = self.rng
        depth = len(atoms) - 1
        cut = depth
        if not reachable:
            how = rng.choice(("leaf", "drop1", "drop2") if depth >= 3 else ("leaf", "drop1"))
            cut = depth - {"leaf": 0, "drop1": 1, "drop2": 2}[how]
        for i in range(cut):
            head, support = atoms[i], atoms[i + 1]
            cycle = atoms[: i + 1]
            if rng.random() < P_CASE_SPLIT:
                pivot = rng.choice(self.free if rng.random() < 0.5 else self.all_atoms)
                if pivot in (head, support):
                    pivot = rng.choice(self.free)
                a: Formula = ("AND", support, pivot)
                b: Formula = ("AND", support, ("NOT", pivot))
                self.premises.append((a if rng.random() < 0.5 else (a[0], a[2], a[1]), head))
                self.premises.append((b if rng.random() < 0.5 else (b[0], b[2], b[1]), head))
            else:
                self.premises.append((self.body(support, 2, cycle), head))
        if reachable:
            self.add_known(atoms[depth])
            self.derivable.extend(atoms[1:])  # not the goal: goals enter bodies only at random

    def distractor(self, goals: list[str]) -> None:
        """A premise whose body is False in M (so it never makes a goal derivable); its
        head is any non-goal atom, or (equally for every goal) a goal."""
        rng = self.rng
        if rng.random() < P_DISTRACTOR_ON_GOAL:
            head = rng.choice(goals)
        else:
            head = rng.choice(self.all_atoms)
            if head in goals:
                head = rng.choice(self.known)
        support = self.noise(1, [])
        self.premises.append((self.body(support, 1 if type(support) is tuple else 2, []), head))


def generate_puzzle(
    level: int, rng: random.Random, verify: bool = True
) -> tuple[dict[str, Any], list[bool]] | None:
    """One puzzle: (puzzle dict of strings, labels). With `verify`, the exact solver
    re-labels it and a disagreement (a generator bug) returns None."""
    spec = LEVELS[level]
    b = _Builder(spec, rng)
    n_goals = rng.randint(*GOALS_PER_PUZZLE)
    n_reach = rng.randint(1, n_goals - 1)
    labels = [True] * n_reach + [False] * (n_goals - n_reach)
    rng.shuffle(labels)
    chains = []
    for reachable in labels:
        atoms = [b.new_atom() for _ in range(rng.randint(*spec.depth) + 1)]
        chains.append((atoms, reachable))
    goals = [atoms[0] for atoms, _ in chains]
    b.all_atoms = sorted(b.used)  # sorted: set order is not reproducible across runs
    order = list(range(n_goals))
    rng.shuffle(order)  # build order: later reachable chains may use earlier ones' atoms
    for k in order:
        b.chain(*chains[k])
    for _ in range(rng.randint(*spec.extra_known)):
        b.add_known(b.new_atom())
    for _ in range(rng.randint(*spec.distractors)):
        b.distractor(goals)
    known = list(dict.fromkeys(b.known))
    if verify and reachability(b.premises, known, goals) != labels:
        return None
    rng.shuffle(b.premises)
    rng.shuffle(known)
    puzzle = {
        "premises": [render_premise(body, head) for body, head in b.premises],
        "known_atoms": known,
        "goals": goals,
    }
    return puzzle, labels


@register_family
class Abduction(TaskFamily):
    name = "abduction"
    worked_variants = 3  # peirce.tasks.worked.phrasing.N_VARIANTS

    def generate_one(self, level: int, rng: random.Random) -> tuple[dict[str, Any], str, str] | None:
        if level not in LEVELS:
            raise ValueError(f"abduction level must be one of {sorted(LEVELS)}, got {level!r}")
        drawn = generate_puzzle(level, rng)
        if drawn is None:
            return None
        puzzle, labels = drawn
        return puzzle, render_puzzle(puzzle), render_solution(puzzle["goals"], labels)

    def solve(self, puzzle_text: str) -> str:
        return solve_puzzle(parse_puzzle_text(puzzle_text))

    def worked_solution(self, puzzle_text: str, variant: int | None = None,
                        rng: random.Random | None = None) -> str:
        from peirce.tasks.worked.abduction import worked_abduction  # it imports this module
        from peirce.tasks.worked.phrasing import Phrasing

        return worked_abduction(puzzle_text, Phrasing(variant, rng))

    def parse_answer(self, answer: str) -> dict[str, bool] | None:
        try:
            return parse_answer_text(answer)
        except Exception:  # contract: never raise
            return None
