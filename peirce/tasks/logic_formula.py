"""Propositional formulas in the MAA text format: AST, parser, printer, bit-parallel evaluation.

The reference data writes a negated variable at the leaves as `¬E` and a negation node as
`¬(...)` (so `¬(D)`, `¬(¬A)`, `¬((A ∧ B))` all occur); binary nodes are always
`(left OP right)`. The parser accepts all of these (plus redundant parentheses), and the
printer reproduces the reference text byte for byte, which the tests check on every
reference formula.

Evaluation is bit-parallel: a formula over n variables evaluates to one Python int of 2^n
bits, bit j set iff the formula holds under assignment j (variable i is True in assignment j
iff bit n-1-i of j is set, so assignment 0 is all-False and the order is lexicographic).
One pass over the AST evaluates all assignments at once, which is what makes exhaustive
uniqueness checks cheap (12 variables = 4096-bit ints).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Union

OPS: tuple[str, ...] = ("→", "∧", "∨", "↔", "⊕")
NOT = "¬"
_ASCII_ALIASES = {"->": "→", "<->": "↔", "&": "∧", "|": "∨", "^": "⊕", "~": "¬", "!": "¬"}


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Not:
    child: "Formula"
    bare: bool = False  # printed `¬A` (leaf literal) instead of `¬(A)`


@dataclass(frozen=True, slots=True)
class Bin:
    op: str
    left: "Formula"
    right: "Formula"


Formula = Union[Var, Not, Bin]


class FormulaSyntaxError(ValueError):
    """Unparseable formula text; the message names the position and what was found."""


# ----------------------------------------------------------------------------- printing


def to_text(f: Formula) -> str:
    if isinstance(f, Var):
        return f.name
    if isinstance(f, Not):
        inner = to_text(f.child)
        if f.bare and isinstance(f.child, Var):
            return NOT + inner
        return f"{NOT}({inner})"
    return f"({to_text(f.left)} {f.op} {to_text(f.right)})"


def variables_of(f: Formula) -> set[str]:
    if isinstance(f, Var):
        return {f.name}
    if isinstance(f, Not):
        return variables_of(f.child)
    return variables_of(f.left) | variables_of(f.right)


# ----------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"\s*(?:(<->|->|[()¬→∧∨↔⊕&|^~!])|([A-Z][A-Za-z0-9_]*))")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaSyntaxError(
                f"unexpected character {text[pos:pos + 1]!r} at position {pos} in formula {text!r}"
            )
        sym, name = m.group(1), m.group(2)
        tokens.append(_ASCII_ALIASES.get(sym, sym) if sym else name)
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent: expr := unary [OP unary]; unary := ¬ unary | atom; atom := VAR | ( expr ).

    One binary operator per parenthesis level: the format is fully parenthesised, and a chain
    like `A ∧ B ∨ C` has no agreed precedence, so it is rejected rather than guessed."""

    def __init__(self, text: str, max_depth: int = 200):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.max_depth = max_depth

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _fail(self, what: str) -> FormulaSyntaxError:
        found = self._peek()
        where = f"token {self.i} ({found!r})" if found is not None else "end of input"
        return FormulaSyntaxError(f"{what} at {where} in formula {self.text!r}")

    def parse(self) -> Formula:
        if not self.tokens:
            raise FormulaSyntaxError(f"empty formula {self.text!r}")
        f = self._expr(0)
        if self._peek() is not None:
            raise self._fail("unexpected trailing input")
        return f

    def _expr(self, depth: int) -> Formula:
        if depth > self.max_depth:
            raise self._fail(f"nesting deeper than {self.max_depth}")
        left = self._unary(depth)
        tok = self._peek()
        if tok in OPS:
            self.i += 1
            right = self._unary(depth)
            if self._peek() in OPS:
                raise self._fail("operator chain without parentheses")
            return Bin(tok, left, right)
        return left

    def _unary(self, depth: int) -> Formula:
        if depth > self.max_depth:
            raise self._fail(f"nesting deeper than {self.max_depth}")
        tok = self._peek()
        if tok == NOT:
            self.i += 1
            nxt = self._peek()
            child = self._unary(depth + 1)
            return Not(child, bare=nxt is not None and nxt != "(" and nxt != NOT)
        return self._atom(depth)

    def _atom(self, depth: int) -> Formula:
        tok = self._peek()
        if tok == "(":
            self.i += 1
            f = self._expr(depth + 1)
            if self._peek() != ")":
                raise self._fail("expected ')'")
            self.i += 1
            return f
        if tok is not None and tok[0].isalpha():
            self.i += 1
            return Var(tok)
        raise self._fail("expected a variable, '¬' or '('")


def parse_formula(text: str) -> Formula:
    """Parse one formula; raises FormulaSyntaxError naming the position on bad input."""
    return _Parser(text).parse()


# ----------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=64)
def var_masks(n: int) -> tuple[int, ...]:
    """Truth tables of the n variables over all 2^n assignments (see module docstring)."""
    if not 1 <= n <= 20:
        raise ValueError(f"number of variables must be in 1..20, got {n}")
    size = 1 << n
    masks = []
    for i in range(n):
        half = 1 << (n - 1 - i)  # run length of equal bits for variable i
        block = ((1 << half) - 1) << half  # `half` zeros then `half` ones
        period = half << 1
        repeat = ((1 << size) - 1) // ((1 << period) - 1)
        masks.append(block * repeat)
    return tuple(masks)


@functools.lru_cache(maxsize=64)
def full_mask(n: int) -> int:
    return (1 << (1 << n)) - 1


def combine(op: str, a: int, b: int, full: int) -> int:
    if op == "∧":
        return a & b
    if op == "∨":
        return a | b
    if op == "⊕":
        return a ^ b
    if op == "→":
        return (full ^ a) | b
    if op == "↔":
        return full ^ (a ^ b)
    raise ValueError(f"unknown operator {op!r}; expected one of {' '.join(OPS)}")


def truth_table(f: Formula, index: dict[str, int], n: int) -> int:
    """Bit-parallel truth table of `f`; `index` maps variable name -> position 0..n-1."""
    masks, full = var_masks(n), full_mask(n)

    def ev(g: Formula) -> int:
        if isinstance(g, Var):
            try:
                return masks[index[g.name]]
            except KeyError:
                raise ValueError(f"variable {g.name!r} is not among {sorted(index)}") from None
        if isinstance(g, Not):
            return full ^ ev(g.child)
        return combine(g.op, ev(g.left), ev(g.right), full)

    return ev(f)


def assignment_of(bit: int, names: list[str]) -> dict[str, bool]:
    """Decode assignment number `bit` (see module docstring) to name -> value."""
    n = len(names)
    return {name: bool((bit >> (n - 1 - i)) & 1) for i, name in enumerate(names)}


def solve_formulas(formulas: list[Formula], names: list[str]) -> list[dict[str, bool]]:
    """All satisfying assignments of the conjunction, by exhaustive bit-parallel enumeration."""
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    sat = full_mask(n)
    for f in formulas:
        sat &= truth_table(f, index, n)
    out = []
    while sat:
        low = sat & -sat
        out.append(assignment_of(low.bit_length() - 1, names))
        sat ^= low
    return out
