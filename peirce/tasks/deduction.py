"""Deduction: propositional satisfiability over nested formulas with exactly one model.

Generator (recipe.md): a formula is built recursively; at max depth a variable, negated
with p=0.4 (`¬A`); above it a negation node with p=0.2 (`¬(...)`), else `(left OP right)`
with OP uniform over `→ ∧ ∨ ↔ ⊕`. A puzzle has 3-6 formulas (uniform) and is kept only
when exactly one assignment satisfies all of them. Text and truth table are built in the
same recursion (bit-parallel over all 2^n assignments, see `logic_formula`), so a
candidate costs one pass and an unsatisfiable prefix stops it early.

The solver never looks at the generator's data: it parses the reference text, enumerates
all assignments and returns the unique model in the reference answer format.
"""

from __future__ import annotations

import functools
import random
import re
from fractions import Fraction
from typing import Any, Callable, Union

from peirce.tasks.base import TaskFamily, register_family
from peirce.tasks.logic_formula import (
    FormulaSyntaxError,
    OPS,
    full_mask,
    parse_formula,
    solve_formulas,
    assignment_of,
    var_masks,
    variables_of,
)

# level -> (number of variables, max depth)
LEVELS: dict[int, tuple[int, int]] = {1: (4, 1), 2: (6, 2), 3: (8, 3), 4: (10, 4), 5: (12, 5)}
MIN_FORMULAS, MAX_FORMULAS = 3, 6
P_NEGATED_LITERAL = 0.4
P_NEGATION_NODE = 0.2

HEADER = "Below are some nested formulas:\n"
FOOTER = "Please list the truth value of each variable\n"
_ITEM = "  - "


def level_params(level: int) -> tuple[int, int]:
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"deduction level must be one of {sorted(LEVELS)}, got {level!r}") from None


def format_puzzle(formulas: list[str]) -> str:
    return HEADER + "".join(f"{_ITEM}{f}\n" for f in formulas) + FOOTER


def format_solution(assignment: dict[str, bool]) -> str:
    return "".join(f"({i}) {name} is {value}\n" for i, (name, value) in enumerate(assignment.items(), 1))


_SPACED_OPS = tuple(f" {op} " for op in OPS)
Shape = Union[str, tuple]  # text of a table node, (-1, child) for ¬(child), (op index, left, right)


def render(shape: Shape) -> str:
    """Text of a sampled formula. Rendering is deferred to accepted puzzles: concatenating
    non-Latin-1 strings (¬ → ∧ ...) costs more than the rest of sampling a node."""
    if isinstance(shape, str):
        return shape
    if shape[0] < 0:
        return f"¬({render(shape[1])})"
    return f"({render(shape[1])}{_SPACED_OPS[shape[0]]}{render(shape[2])})"


@functools.lru_cache(maxsize=16)
def _formula_sampler(n: int, max_depth: int) -> Callable[[Callable[[], float]], tuple[Shape, int]]:
    """A sampler of one random formula as (shape, truth table) for n variables (`render`
    turns a shape into text).

    Speed, without changing the distribution of recipe.md: a literal is one of 5n equally
    likely slots (per variable 2 negated, 3 plain: p=0.4), and a node one level above the
    leaves (`¬(lit)` with p=0.2, else `(lit OP lit)`) is one entry of a precomputed table
    of all slot combinations, so it costs one uniform draw and one lookup; only the upper
    nodes are built recursively."""
    names = variable_names(n)
    masks, full = var_masks(n), full_mask(n)
    neg_w = Fraction(P_NEGATED_LITERAL).limit_denominator(100)
    lits = list(zip(names, masks)) + [("¬" + name, full ^ mask) for name, mask in zip(names, masks)]
    n_lits = len(lits)  # index i: variable i, index n + i: its negation
    slots = []  # equally likely literal slots
    for i in range(n):
        slots += [n + i] * neg_w.numerator + [i] * (neg_w.denominator - neg_w.numerator)
    n_slots, n_ops, p_not = len(slots), len(OPS), P_NEGATION_NODE

    def apply(k: int, lv: int, rv: int) -> int:
        if k == 0:  # →
            return (full ^ lv) | rv
        if k == 1:  # ∧
            return lv & rv
        if k == 2:  # ∨
            return lv | rv
        if k == 3:  # ↔
            return full ^ (lv ^ rv)
        return lv ^ rv  # ⊕

    # each distinct node built once; the slot tables repeat references to them
    neg_nodes = [("¬(" + t + ")", full ^ v) for t, v in lits]
    bin_nodes = [("(" + lt + _SPACED_OPS[k] + rt + ")", apply(k, lv, rv))
                 for k in range(n_ops) for lt, lv in lits for rt, rv in lits]
    leaf_table = [lits[a] for a in slots]
    neg_table = [neg_nodes[a] for a in slots]
    bin_table = [bin_nodes[(k * n_lits + a) * n_lits + b] for k in range(n_ops) for a in slots for b in slots]
    n_neg, n_bin = len(neg_table), len(bin_table)
    neg_scale, bin_scale = n_neg / p_not, n_bin / (1.0 - p_not)
    op_scale = n_ops / (1.0 - p_not)

    def leaf(rnd: Callable[[], float]) -> tuple[str, int]:
        return leaf_table[min(int(rnd() * n_slots), n_slots - 1)]

    def above_leaves(rnd: Callable[[], float]) -> tuple[str, int]:
        u = rnd()
        if u < p_not:
            return neg_table[min(int(u * neg_scale), n_neg - 1)]
        return bin_table[min(int((u - p_not) * bin_scale), n_bin - 1)]

    def two_above_leaves(rnd: Callable[[], float]) -> tuple[Shape, int]:
        """`inner(above_leaves)` with the child calls inlined (the hot path at levels 2-5)."""
        u = rnd()
        if u < p_not:
            u = rnd()
            if u < p_not:
                t, v = neg_table[min(int(u * neg_scale), n_neg - 1)]
            else:
                t, v = bin_table[min(int((u - p_not) * bin_scale), n_bin - 1)]
            return (-1, t), full ^ v
        k = min(int((u - p_not) * op_scale), n_ops - 1)
        u = rnd()
        if u < p_not:
            lt, lv = neg_table[min(int(u * neg_scale), n_neg - 1)]
        else:
            lt, lv = bin_table[min(int((u - p_not) * bin_scale), n_bin - 1)]
        u = rnd()
        if u < p_not:
            rt, rv = neg_table[min(int(u * neg_scale), n_neg - 1)]
        else:
            rt, rv = bin_table[min(int((u - p_not) * bin_scale), n_bin - 1)]
        return (k, lt, rt), apply(k, lv, rv)

    def inner(child: Callable) -> Callable:
        def node(rnd: Callable[[], float]) -> tuple[Shape, int]:
            u = rnd()
            if u < p_not:
                t, v = child(rnd)
                return (-1, t), full ^ v
            k = min(int((u - p_not) * op_scale), n_ops - 1)
            lt, lv = child(rnd)
            rt, rv = child(rnd)
            return (k, lt, rt), apply(k, lv, rv)

        return node

    if max_depth == 0:
        return leaf
    if max_depth == 1:
        return above_leaves
    sampler = two_above_leaves  # one function per depth: no depth bookkeeping at run time
    for _ in range(max_depth - 2):
        sampler = inner(sampler)
    return sampler


def variable_names(n: int) -> list[str]:
    if not 1 <= n <= 26:
        raise ValueError(f"number of variables must be in 1..26, got {n}")
    return [chr(ord("A") + i) for i in range(n)]


# ----------------------------------------------------------------------------- solver

_LINE_ITEM = re.compile(r"^\s*-\s*(.+?)\s*$")


def parse_puzzle_text(puzzle_text: str) -> list[str]:
    """Formula strings of a reference-format puzzle; ValueError naming the bad line."""
    if not isinstance(puzzle_text, str):
        raise ValueError(f"puzzle_text must be str, got {type(puzzle_text).__name__}")
    lines = puzzle_text.strip("\n").split("\n")
    if not lines or lines[0].strip() != HEADER.strip():
        raise ValueError(f"deduction puzzle must start with {HEADER.strip()!r}, got {lines[0][:80]!r}")
    if lines[-1].strip() == FOOTER.strip():
        lines = lines[:-1]
    formulas = []
    for no, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        m = _LINE_ITEM.match(line)
        if m is None:
            raise ValueError(f"line {no} of deduction puzzle is not a '  - <formula>' item: {line[:80]!r}")
        formulas.append(m.group(1))
    if not formulas:
        raise ValueError("deduction puzzle lists no formulas")
    return formulas


def _ordered_names(found: set[str]) -> list[str]:
    """Single letters: the full range A..max, so a letter that appears in no formula counts
    as a free variable (several models) instead of silently vanishing from the answer."""
    if all(len(n) == 1 for n in found):
        top = max(found)
        return [chr(c) for c in range(ord("A"), ord(top) + 1)]
    return sorted(found, key=lambda s: (len(s), s))


def solve_formula_texts(formulas: list[str]) -> dict[str, bool]:
    parsed = []
    for i, text in enumerate(formulas, 1):
        try:
            parsed.append(parse_formula(text))
        except FormulaSyntaxError as exc:
            raise ValueError(f"formula {i}: {exc}") from None
    names = _ordered_names(set().union(*(variables_of(f) for f in parsed)))
    if len(names) > 20:
        raise ValueError(f"too many variables for exhaustive search: {len(names)} > 20")
    models = solve_formulas(parsed, names)
    if len(models) != 1:
        raise ValueError(
            f"deduction puzzle has {len(models)} satisfying assignments over {names}; expected exactly 1"
        )
    return models[0]


# ----------------------------------------------------------------------------- answers

_ANSWER_LINE = re.compile(r"(?:\(\d{1,4}\)|\d{1,4}[.)]?)?\s*([A-Za-z][A-Za-z0-9_]{0,15})\s+is\s+(true|false)\.?",
                          re.IGNORECASE)
_MAX_ANSWER_CHARS = 1 << 20


def parse_assignment(answer: Any) -> dict[str, bool] | None:
    """`(i) X is True|False` lines -> {X: bool}; None if empty, any line is malformed, or a
    variable gets two different values. Linear time: one anchored regex per stripped line."""
    if not isinstance(answer, str) or len(answer) > 4 * _MAX_ANSWER_CHARS:
        return None
    out: dict[str, bool] = {}
    for raw in answer.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _ANSWER_LINE.fullmatch(line)
        if m is None:
            return None
        name, value = m.group(1).upper(), m.group(2).lower() == "true"
        if out.setdefault(name, value) != value:
            return None
    return out or None


@register_family
class DeductionFamily(TaskFamily):
    name = "deduction"

    def generate_one(self, level: int, rng: random.Random) -> tuple[dict[str, Any], str, str] | None:
        n, max_depth = level_params(level)
        sample, rnd = _formula_sampler(n, max_depth), rng.random
        count = rng.randint(MIN_FORMULAS, MAX_FORMULAS)
        sat = full_mask(n)
        shapes = []
        for _ in range(count):
            shape, table = sample(rnd)
            shapes.append(shape)
            sat &= table
            if not sat:
                return None  # unsatisfiable already
        if sat & (sat - 1):
            return None  # more than one model
        names = variable_names(n)
        assignment = assignment_of(sat.bit_length() - 1, names)
        formulas = [render(sh) for sh in shapes]
        puzzle = {"formulas": formulas, "variables": names}
        return puzzle, format_puzzle(formulas), format_solution(assignment)

    def solve(self, puzzle_text: str) -> str:
        return format_solution(solve_formula_texts(parse_puzzle_text(puzzle_text)))

    def parse_answer(self, answer: str) -> dict[str, bool] | None:
        return parse_assignment(answer)
