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
import math
import random
import re
from fractions import Fraction
from typing import Any, Callable, Union

from peirce.tasks.base import TaskFamily, register_family
from peirce.tasks.logic_formula import (
    Formula,
    FormulaSyntaxError,
    OPS,
    combine,
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
# Draws per `generate_one` before giving up: the rarest level (5) accepts ~1 in 160
# candidates, so 20,000 failing in a row has probability < 1e-50.
MAX_ATTEMPTS = 20_000

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


def _weighted_table(groups: list[tuple[Fraction, list]]) -> list:
    """A list in which `int(u * len(table))` for uniform u picks group g with probability
    weight_g and an entry uniformly within the group: one draw, one lookup, no branches.
    Each group is repeated so that the counts are exactly in the ratio of the weights.
    The last entry is repeated once at the end: `u * len` can round up to `len`."""
    sizes = [len(entries) for _, entries in groups]
    # copies_g * size_g proportional to weight_g, all integers
    per_entry = [w / size for (w, _), size in zip(groups, sizes)]
    scale = math.lcm(*(f.denominator for f in per_entry))
    copies = [f * scale for f in per_entry]
    common = math.gcd(*(int(c) for c in copies))
    table = []
    for (_, entries), c in zip(groups, copies):
        table += entries * (int(c) // common)
    return table + table[-1:]


@functools.lru_cache(maxsize=16)
def _formula_sampler(n: int, max_depth: int) -> Callable[[Callable[[], float]], tuple[Shape, int]]:
    """A sampler of one random formula as (shape, truth table) for n variables (`render`
    turns a shape into text).

    Speed, without changing the distribution of recipe.md: every random choice is one
    uniform draw indexing a table whose entries are repeated in proportion to their
    probabilities (`_weighted_table`). A literal is negated with p=0.4; a node one level
    above the leaves (`¬(lit)` with p=0.2, else `(lit OP lit)`) is one entry of a
    precomputed table of all literal combinations; an upper node's kind (¬ with p=0.2, else
    one of the five operators) is one entry of a 25-slot table. Only the upper nodes are
    built recursively."""
    names = variable_names(n)
    masks, full = var_masks(n), full_mask(n)
    p_neg_lit = Fraction(P_NEGATED_LITERAL).limit_denominator(100)
    p_not = Fraction(P_NEGATION_NODE).limit_denominator(100)
    plain = list(zip(names, masks))
    negated = [("¬" + name, full ^ mask) for name, mask in zip(names, masks)]
    leaf_table = _weighted_table([(p_neg_lit, negated), (1 - p_neg_lit, plain)])
    slots = leaf_table[:-1]  # equally likely literal slots (without the rounding pad)
    n_ops = len(OPS)
    kinds = _weighted_table([(p_not, [-1]), (1 - p_not, list(range(n_ops)))])  # -1: ¬(child)
    # each distinct node is built once; the tables repeat references to them
    neg_node = {t: ("¬(" + t + ")", full ^ v) for t, v in plain + negated}
    bin_node = {(k, lt, rt): ("(" + lt + _SPACED_OPS[k] + rt + ")", combine(OPS[k], lv, rv, full))
                for k in range(n_ops) for lt, lv in plain + negated for rt, rv in plain + negated}
    above_table = _weighted_table([
        (p_not, [neg_node[t] for t, _ in slots]),
        (1 - p_not, [bin_node[k, lt, rt] for k in range(n_ops) for lt, _ in slots for rt, _ in slots]),
    ])
    n_leaf, n_above, n_kinds = len(slots), len(above_table) - 1, len(kinds) - 1

    def leaf(rnd: Callable[[], float]) -> tuple[str, int]:
        return leaf_table[int(rnd() * n_leaf)]

    def above_leaves(rnd: Callable[[], float]) -> tuple[str, int]:
        return above_table[int(rnd() * n_above)]

    def two_above_leaves(rnd: Callable[[], float]) -> tuple[Shape, int]:
        """`inner(above_leaves)` with the child calls and `combine` inlined (the hot path)."""
        k = kinds[int(rnd() * n_kinds)]
        if k < 0:
            t, v = above_table[int(rnd() * n_above)]
            return (-1, t), full ^ v
        lt, lv = above_table[int(rnd() * n_above)]
        rt, rv = above_table[int(rnd() * n_above)]
        if k == 1:
            v = lv & rv
        elif k == 2:
            v = lv | rv
        elif k == 4:
            v = lv ^ rv
        elif k == 0:
            v = (full ^ lv) | rv
        else:
            v = full ^ lv ^ rv
        return (k, lt, rt), v

    def inner(child: Callable) -> Callable:
        def node(rnd: Callable[[], float]) -> tuple[Shape, int]:
            k = kinds[int(rnd() * n_kinds)]
            if k < 0:
                t, v = child(rnd)
                return (-1, t), full ^ v
            lt, lv = child(rnd)
            rt, rv = child(rnd)
            return (k, lt, rt), combine(OPS[k], lv, rv, full)

        return node

    if max_depth == 0:
        return leaf
    if max_depth == 1:
        return above_leaves
    sampler = two_above_leaves  # one function per depth: no depth bookkeeping at run time
    for _ in range(max_depth - 2):
        sampler = inner(sampler)
    return sampler


def _one_model_candidate(sample: Callable, rnd: Callable[[], float], count: int,
                         full: int) -> tuple[list[Shape], int] | None:
    """`count` sampled formulas and the index of their one common model, or None when they
    have none (stopping at the first formula that empties the model set) or several."""
    sat = full
    shapes = []
    for _ in range(count):
        shape, table = sample(rnd)
        shapes.append(shape)
        sat &= table
        if not sat:
            return None
    if sat & (sat - 1):
        return None
    return shapes, sat.bit_length() - 1


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


def parse_formula_texts(formulas: list[str]) -> tuple[list[Formula], list[str]]:
    """Parsed formulas and the variable order of the answer; ValueError naming the formula."""
    parsed = []
    for i, text in enumerate(formulas, 1):
        try:
            parsed.append(parse_formula(text))
        except FormulaSyntaxError as exc:
            raise ValueError(f"formula {i}: {exc}") from None
    return parsed, _ordered_names(set().union(*(variables_of(f) for f in parsed)))


def solve_formula_texts(formulas: list[str]) -> dict[str, bool]:
    parsed, names = parse_formula_texts(formulas)
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
    worked_variants = 3  # peirce.tasks.worked.phrasing.N_VARIANTS

    def generate_one(self, level: int, rng: random.Random) -> tuple[dict[str, Any], str, str] | None:
        """Retry rejected candidates from the same `rng` (up to `MAX_ATTEMPTS`) instead of
        returning None: the first accepted draw of an i.i.d. stream has exactly the
        conditional distribution of one accepted candidate, and at level 3 only ~2% of
        candidates have one model, so seeding a fresh `random.Random` per rejection
        (what the dataset loop does for a None) cost a third of the generation time."""
        n, max_depth = level_params(level)
        sample, rnd, full = _formula_sampler(n, max_depth), rng.random, full_mask(n)
        randint = rng.randint
        for _ in range(MAX_ATTEMPTS):
            found = _one_model_candidate(sample, rnd, randint(MIN_FORMULAS, MAX_FORMULAS), full)
            if found is not None:
                return self._puzzle(n, *found)
        return None

    @staticmethod
    def _puzzle(n: int, shapes: list[Shape], model: int) -> tuple[dict[str, Any], str, str]:
        names = variable_names(n)
        formulas = [render(sh) for sh in shapes]
        puzzle = {"formulas": formulas, "variables": names}
        return puzzle, format_puzzle(formulas), format_solution(assignment_of(model, names))

    def solve(self, puzzle_text: str) -> str:
        return format_solution(solve_formula_texts(parse_puzzle_text(puzzle_text)))

    def worked_solution(self, puzzle_text: str, variant: int | None = None,
                        rng: random.Random | None = None) -> str:
        from peirce.tasks.worked.deduction import worked_deduction  # it imports this module
        from peirce.tasks.worked.phrasing import Phrasing

        return worked_deduction(puzzle_text, Phrasing(variant, rng))

    def parse_answer(self, answer: str) -> dict[str, bool] | None:
        return parse_assignment(answer)
