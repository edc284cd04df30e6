"""Induction: masked integer-sequence completion, with a rule search that decides determinacy.

Generators follow recipe.md (the released MAA data): L1 arithmetic / geometric /
alternating -b,+a; L2 two-step add / alternating floor-divide,multiply / a missing middle
term; L3-L5 a cycle of k = 3/4/5 operations (+a, -b with a, b in 1..4, xc with c in 2..4).

A sequence puzzle is only fair when its visible terms determine the answer. The solver is a
search over rule families ordered by complexity (number of free operations):

    1  arithmetic (+d, any integer d), geometric (xr, any nonzero integer r)
    2  alternating additive (+a, +b: covers +a/-b and two-step add), second-order difference,
       alternating floor-divide/multiply (2..4), and any 2-cycle of the ranged operations
    k  a cycle of k ranged operations (+1..4, -1..4, x2..4), k = 1..5

An op cycle is indexed by transition number mod k, so a cycle entered at any phase is just a
rotation of another cycle and needs no separate search. The answer is *determined* when
every rule of the lowest fitting complexity predicts the same value. Generated puzzles are
rejected unless they are determined and the determined value is the generator's own.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Sequence

from peirce.tasks.base import TaskFamily, register_family

Op = tuple[str, int]  # ("+", v): x + v (v may be negative); ("*", v): x * v; ("//", v): max(1, x // v)
Masked = list[int | None]  # exactly one None: the question mark

QUESTION = "What is the value at the question mark?"
HEADER_LAST = "Given the following sequence,"
HEADER_MIDDLE = "Given the following sequence with a missing term,"


def apply_op(op: Op, x: int) -> int:
    kind, v = op
    if kind == "+":
        return x + v
    if kind == "*":
        return x * v
    return max(1, x // v)


def op_text(op: Op) -> str:
    kind, v = op
    if kind == "+":
        return f"+{v}" if v >= 0 else f"-{-v}"
    return f"x{v}" if kind == "*" else f"//{v}"


# ----------------------------------------------------------------------------- op domains


@dataclass(frozen=True)
class _Domain:
    """The operations a rule may use at one position of its cycle."""

    name: str
    ops: frozenset[Op] | None  # None: unbounded (any integer parameter)

    def between(self, x: int, y: int) -> frozenset[Op]:
        """All ops of this domain that map x to y."""
        if self.ops is not None:
            return frozenset(op for op in self.ops if apply_op(op, x) == y)
        if self.name == "add":
            return frozenset({("+", y - x)})
        if x != 0 and y % x == 0 and y != 0:  # "mul": integer ratio, zeros excluded
            return frozenset({("*", y // x)})
        return frozenset()


ADD_ANY = _Domain("add", None)
MUL_ANY = _Domain("mul", None)
RANGED = _Domain(
    "ranged",
    frozenset([("+", v) for v in range(1, 5)] + [("+", -v) for v in range(1, 5)] + [("*", c) for c in range(2, 5)]),
)
MUL_SMALL = _Domain("mul2-4", frozenset(("*", c) for c in range(2, 5)))
DIV_SMALL = _Domain("floordiv2-4", frozenset(("//", d) for d in range(2, 5)))

MAX_CYCLE = 5

# (family name, complexity, alternative per-position domain tuples), in order of simplicity
_CYCLE_FAMILIES: list[tuple[str, int, list[tuple[_Domain, ...]]]] = [
    ("arithmetic", 1, [(ADD_ANY,)]),
    ("geometric", 1, [(MUL_ANY,)]),
    ("alternating add", 2, [(ADD_ANY, ADD_ANY)]),
    ("alternating floordiv/mul", 2, [(DIV_SMALL, MUL_SMALL), (MUL_SMALL, DIV_SMALL)]),
] + [(f"cycle of {k}", k, [(RANGED,) * k]) for k in range(1, MAX_CYCLE + 1)]


def _describe(name: str, sets: Sequence[Iterable[Op] | None]) -> str:
    parts = []
    for s in sets:
        ops = sorted(s) if s is not None else None
        parts.append("?" if not ops else op_text(ops[0]) if len(ops) == 1 else "|".join(map(op_text, ops)))
    return f"{name} ({', '.join(parts)})"


@dataclass(frozen=True)
class RuleFit:
    """One rule that reproduces the visible terms and what it predicts (None: anything).

    `ops`: for cycle families, one operation per cycle position (transition t uses
    `ops[t % len(ops)]`; when several fit a position, the first in sorted order; None where
    no visible transition fixes it). `second_order`: (start, first difference, step)."""

    description: str
    complexity: int
    value: int | None
    ops: tuple[Op | None, ...] | None = None
    second_order: tuple[int, int, int] | None = None


def _cycle_rule(name: str, complexity: int, value: int | None, sets: Sequence[Iterable[Op] | None]) -> RuleFit:
    ops = tuple(min(s) if s else None for s in sets)
    return RuleFit(_describe(name, sets), complexity, value, ops)


def _fit_cycle(name: str, complexity: int, seq: Masked, m: int,
               domains: tuple[_Domain, ...]) -> dict[int | None, RuleFit]:
    """Predicted value -> rule for every op cycle over `domains` that reproduces the
    visible terms; None as a key means the rule leaves the answer free."""
    n, k = len(seq), len(domains)
    constraint: list[frozenset[Op] | None] = [None] * k
    for t in range(n - 1):
        if t == m - 1 or t == m:
            continue
        r = t % k
        ops = domains[r].between(seq[t], seq[t + 1])
        constraint[r] = ops if constraint[r] is None else constraint[r] & ops
        if not constraint[r]:
            return {}

    def options(r: int) -> frozenset[Op] | None:
        return constraint[r] if constraint[r] is not None else domains[r].ops

    out: dict[int | None, RuleFit] = {}
    if m == n - 1:
        r = (n - 2) % k
        opts = options(r)
        if opts is None:
            return {None: _cycle_rule(name, complexity, None, constraint)}
        for op in sorted(opts):
            value = apply_op(op, seq[n - 2])
            if value not in out:
                sets = list(constraint)
                sets[r] = [op]
                out[value] = _cycle_rule(name, complexity, value, sets)
        return out
    r1, r2 = (m - 1) % k, m % k
    o1, o2 = options(r1), options(r2)
    if o1 is None or o2 is None:
        return {None: _cycle_rule(name, complexity, None, constraint)}
    for op1 in sorted(o1):
        v = apply_op(op1, seq[m - 1])
        for op2 in sorted(o2) if r1 != r2 else [op1]:
            if apply_op(op2, v) == seq[m + 1] and v not in out:
                sets = list(constraint)
                sets[r1], sets[r2] = [op1], [op2]
                out[v] = _cycle_rule(name, complexity, v, sets)
    return out


def _fit_second_order(seq: Masked, m: int) -> dict[int | None, RuleFit]:
    """x_i = x0 + d*i + e*i(i-1)/2 with integers x0, d, e (differences form an arithmetic
    progression), fitted exactly through the visible terms."""
    pts = [(i, x) for i, x in enumerate(seq) if x is not None]
    if len(pts) < 3:
        return {}
    base = pts[:3]

    def at(j: int) -> Fraction:
        total = Fraction(0)
        for a, (ia, xa) in enumerate(base):
            term = Fraction(xa)
            for b, (ib, _) in enumerate(base):
                if a != b:
                    term *= Fraction(j - ib, ia - ib)
            total += term
        return total

    p0, p1, p2 = at(0), at(1), at(2)
    x0, d, e = p0, p1 - p0, p2 - 2 * p1 + p0
    if any(c.denominator != 1 for c in (x0, d, e)):
        return {}
    if any(at(i) != x for i, x in pts[3:]):
        return {}
    value = int(at(m))
    desc = f"second-order difference (start {x0}, first difference {d}, step {e})"
    return {value: RuleFit(desc, 2, value, second_order=(int(x0), int(d), int(e)))}


def induction_rules(sequence_with_mask: Sequence[int | str | None]) -> list[RuleFit]:
    """Every fitting rule family's predictions, simplest first (one per distinct value and
    complexity). Several distinct values at the lowest complexity mean the puzzle is
    ambiguous."""
    seq, m = _normalise(sequence_with_mask)
    found: list[RuleFit] = []
    seen: set[tuple[int, int | None]] = set()

    def add(fits: dict[int | None, RuleFit]) -> None:
        for value, fit in fits.items():
            if (fit.complexity, value) not in seen:
                seen.add((fit.complexity, value))
                found.append(fit)

    for name, complexity, patterns in _CYCLE_FAMILIES:
        for domains in patterns:
            add(_fit_cycle(name, complexity, seq, m, domains))
        if name == "alternating add":
            add(_fit_second_order(seq, m))
    found.sort(key=lambda f: f.complexity)
    return found


def induction_candidates(sequence_with_mask: Sequence[int | str | None]) -> list[tuple[str, int, int | None]]:
    """`induction_rules` as (rule description, complexity, value) triples; value None
    means that rule fits but leaves the answer free."""
    return [(f.description, f.complexity, f.value) for f in induction_rules(sequence_with_mask)]


@dataclass(frozen=True)
class Verdict:
    """Whether the visible terms determine the answer (and, given the gold, whether correctly)."""

    value: int | None  # the simplest rules' common prediction; None when not determined
    complexity: int | None
    reason: str  # empty when determined (and equal to the gold, if one was given)

    @property
    def determined(self) -> bool:
        return not self.reason


def determine(sequence_with_mask: Sequence[int | str | None], gold: int | None = None) -> Verdict:
    cands = induction_candidates(sequence_with_mask)
    if not cands:
        return Verdict(None, None, "no rule in the search space fits the visible terms")
    low = cands[0][1]
    simplest = [c for c in cands if c[1] == low]
    values = {c[2] for c in simplest}
    if len(values) > 1 or None in values:
        shown = "; ".join(f"{d} -> {'any' if v is None else v}" for d, _, v in simplest[:6])
        return Verdict(None, low, f"rules of complexity {low} disagree: {shown}")
    (value,) = values
    if gold is not None and value != gold:
        return Verdict(value, low, f"simpler rule {simplest[0][0]} (complexity {low}) predicts {value}, gold is {gold}")
    return Verdict(value, low, "")


# ----------------------------------------------------------------------------- text format

_ITEM = re.compile(r"""(?:'|")?\s*([+-]?\d{1,40}|\?)\s*(?:'|")?""")
_TEXT = re.compile(r"(Given the following sequence(?: with a missing term)?,)\n\[([^\]\n]{0,20000})\]\n"
                   + re.escape(QUESTION))
MAX_TERMS = 1000


def _normalise(seq: Sequence[int | str | None]) -> tuple[Masked, int]:
    out: Masked = []
    for i, x in enumerate(seq):
        if x is None or x == "?":
            out.append(None)
        elif isinstance(x, bool) or not isinstance(x, (int, str)):
            raise ValueError(f"sequence term {i} must be an int or '?', got {x!r}")
        else:
            try:
                out.append(int(x))
            except ValueError:
                raise ValueError(f"sequence term {i} is not an integer: {x!r}") from None
    masks = [i for i, x in enumerate(out) if x is None]
    if len(masks) != 1:
        raise ValueError(f"sequence must contain exactly one '?', found {len(masks)}")
    m = masks[0]
    if m == 0:
        raise ValueError("the '?' must not be the first term (nothing precedes it)")
    if len(out) < 3:
        raise ValueError(f"sequence needs at least 3 terms, got {len(out)}")
    return out, m


def parse_puzzle_text(puzzle_text: str) -> Masked:
    """The masked sequence of a reference-format puzzle; ValueError naming what is wrong."""
    if not isinstance(puzzle_text, str):
        raise ValueError(f"puzzle_text must be str, got {type(puzzle_text).__name__}")
    m = _TEXT.search(puzzle_text)
    if m is None:
        raise ValueError(
            f"induction puzzle must read '{HEADER_LAST}\\n[...]\\n{QUESTION}', got {puzzle_text[:120]!r}"
        )
    items = m.group(2).split(",")
    if len(items) > MAX_TERMS:
        raise ValueError(f"sequence has {len(items)} terms, more than {MAX_TERMS}")
    seq: Masked = []
    for i, item in enumerate(items):
        im = _ITEM.fullmatch(item.strip())
        if im is None:
            raise ValueError(f"sequence term {i} is not an integer or '?': {item.strip()[:40]!r}")
        seq.append(None if im.group(1) == "?" else int(im.group(1)))
    _normalise(seq)  # validates the mask
    return seq


def format_puzzle(sequence: Sequence[int], mask_index: int) -> str:
    """Reference text: the last term masked shows all terms as strings; a middle term
    masked shows the others as ints under the 'missing term' header."""
    if mask_index == len(sequence) - 1:
        shown = [str(x) for x in sequence]
        shown[mask_index] = "?"
        return f"{HEADER_LAST}\n{shown}\n{QUESTION}"
    shown_mixed: list[int | str] = list(sequence)
    shown_mixed[mask_index] = "?"
    return f"{HEADER_MIDDLE}\n{shown_mixed}\n{QUESTION}"


# ----------------------------------------------------------------------------- generators


def _cycle_sequence(start: int, ops: Sequence[Op], length: int) -> list[int]:
    seq = [start]
    for i in range(1, length):
        seq.append(apply_op(ops[(i - 1) % len(ops)], seq[-1]))
    return seq


def _gen_arithmetic(rng: random.Random) -> tuple[str, list[int], int, list[Op]]:
    length, start, step = rng.randint(5, 8), rng.randint(1, 5), rng.randint(1, 4)
    ops = [("+", step)]
    return "arithmetic", _cycle_sequence(start, ops, length), length - 1, ops


def _gen_geometric(rng: random.Random) -> tuple[str, list[int], int, list[Op]]:
    length, start, ratio = rng.randint(5, 8), rng.randint(1, 3), rng.randint(2, 4)
    ops = [("*", ratio)]
    return "geometric", _cycle_sequence(start, ops, length), length - 1, ops


def _gen_alternating(rng: random.Random) -> tuple[str, list[int], int, list[Op]]:
    length, start = rng.randint(5, 7), rng.randint(1, 10)
    add, sub = rng.randint(1, 3), rng.randint(1, 3)
    ops = [("+", -sub), ("+", add)]
    return "alternating add/sub", _cycle_sequence(start, ops, length), length - 1, ops


def _gen_two_step(rng: random.Random) -> tuple[str, list[int], int, list[Op]]:
    length, start = rng.randint(6, 9), rng.randint(1, 5)
    a, b = rng.randint(1, 4), rng.randint(1, 4)
    ops = [("+", b), ("+", a)]
    return "two-step add", _cycle_sequence(start, ops, length), length - 1, ops


def _gen_mul_div(rng: random.Random) -> tuple[str, list[int], int, list[Op]]:
    length, start = rng.randint(6, 9), rng.randint(2, 5)
    mul, div = rng.randint(2, 4), rng.randint(2, 4)
    ops = [("//", div), ("*", mul)]
    return "alternating floordiv/mul", _cycle_sequence(start, ops, length), length - 1, ops


def _gen_missing(rng: random.Random) -> tuple[str, list[int], int, list[Op]]:
    length, start, step = rng.randint(6, 8), rng.randint(1, 5), rng.randint(1, 4)
    ops = [("+", step)]
    return "missing term", _cycle_sequence(start, ops, length), rng.randint(1, length - 2), ops


def _gen_cycle(rng: random.Random, k: int) -> tuple[str, list[int], int, list[Op]]:
    length, start = rng.randint(7, 11), rng.randint(1, 5)
    ops: list[Op] = []
    for _ in range(k):
        kind = rng.randrange(3)
        ops.append(("+", rng.randint(1, 4)) if kind == 0 else ("+", -rng.randint(1, 4)) if kind == 1
                   else ("*", rng.randint(2, 4)))
    return f"cycle of {k}", _cycle_sequence(start, ops, length), length - 1, ops


_LEVEL_GENERATORS = {
    1: [_gen_arithmetic, _gen_geometric, _gen_alternating],
    2: [_gen_two_step, _gen_mul_div, _gen_missing],
}

_ANSWER = re.compile(r"[+-]?\d{1,200}\.?")


def parse_integer_answer(answer: Any) -> int | None:
    """One integer (surrounding whitespace and a final period allowed); None otherwise."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        return answer
    if not isinstance(answer, str) or len(answer) > 4096:
        return None
    text = answer.strip()
    if not _ANSWER.fullmatch(text):
        return None
    return int(text.rstrip("."))


@register_family
class InductionFamily(TaskFamily):
    name = "induction"
    worked_variants = 3  # peirce.tasks.worked.phrasing.N_VARIANTS

    def generate_one(self, level: int, rng: random.Random) -> tuple[dict[str, Any], str, str] | None:
        if level in _LEVEL_GENERATORS:
            gens = _LEVEL_GENERATORS[level]
            pattern, seq, mask, ops = gens[rng.randrange(len(gens))](rng)
        elif level in (3, 4, 5):
            pattern, seq, mask, ops = _gen_cycle(rng, level)
        else:
            raise ValueError(f"induction level must be one of {list(self.levels)}, got {level!r}")
        masked: Masked = list(seq)
        masked[mask] = None
        if not determine(masked, gold=seq[mask]).determined:
            return None
        puzzle = {"pattern": pattern, "ops": [op_text(op) for op in ops],
                  "complete_sequence": seq, "mask_index": mask}
        return puzzle, format_puzzle(seq, mask), str(seq[mask])

    def solve(self, puzzle_text: str) -> str:
        """The simplest fitting rule's prediction (ties: the first family in order of
        simplicity); ValueError when no rule fits. `determine` says whether it is unique."""
        for _, _, value in induction_candidates(parse_puzzle_text(puzzle_text)):
            if value is not None:
                return str(value)
        raise ValueError("no rule in the search space fits the visible terms")

    def worked_solution(self, puzzle_text: str, variant: int | None = None,
                        rng: random.Random | None = None) -> str:
        from peirce.tasks.worked.induction import worked_induction  # it imports this module
        from peirce.tasks.worked.phrasing import Phrasing

        return worked_induction(puzzle_text, Phrasing(variant, rng))

    def parse_answer(self, answer: str) -> int | None:
        return parse_integer_answer(answer)
