"""The steps that fix each variable of a one-model deduction puzzle, for a worked solution.

Why truth tables: `logic_formula` already evaluates a formula over all 2^n assignments as
one int, so "formula i, given the values fixed so far, forces X" is two mask tests, and a
case split ("X = False makes formula j fail after two forced steps") is a few more. Steps
are chosen simplest first, so a trace reads like a person's: forced facts, propagation, a
short case split, and only when nothing short works, a few formulas taken together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from peirce.tasks.logic_formula import Formula, assignment_of, full_mask, truth_table, var_masks, variables_of

Value = tuple[str, bool]
MAX_VARIABLES = 14  # 2^14-bit tables: a worked solution stays well under a second
MAX_FORMULAS = 32
MAX_CASE_STEPS = 2  # forced steps inside a case before it must fail
MAX_JOINT = 3  # formulas taken together in one step before falling back to all of them


@dataclass(frozen=True)
class Forced:
    """Formula `formula` (0-based), with the `given` values of its variables, forces `values`."""

    formula: int
    given: tuple[Value, ...]
    values: tuple[Value, ...]


@dataclass(frozen=True)
class CaseSplit:
    """Assuming `var` has the other value, the `chain` of forced steps makes formula
    `fails` false, so `var` = `value`."""

    var: str
    value: bool
    chain: tuple[Forced, ...]
    fails: int


@dataclass(frozen=True)
class Together:
    """Formulas `formulas` (0-based), with the values fixed so far, allow only `values`."""

    formulas: tuple[int, ...]
    values: tuple[Value, ...]


Step = Forced | CaseSplit | Together


class _Tables:
    def __init__(self, formulas: list[Formula], names: list[str]):
        n = len(names)
        index = {name: i for i, name in enumerate(names)}
        self.names, self.masks, self.full = names, var_masks(n), full_mask(n)
        self.tables = [truth_table(f, index, n) for f in formulas]
        self.vars = [[x for x in names if x in variables_of(f)] for f in formulas]

    def restrict(self, space: int, var: str, value: bool) -> int:
        mask = self.masks[self.names.index(var)]
        return space & (mask if value else self.full ^ mask)

    def forced_in(self, allowed: int, known: dict[str, bool]) -> tuple[Value, ...]:
        """Unfixed variables that take one value in every assignment of `allowed`."""
        out = []
        for name, mask in zip(self.names, self.masks):
            if name in known:
                continue
            if not allowed & mask:
                out.append((name, False))
            elif not allowed & (self.full ^ mask):
                out.append((name, True))
        return tuple(out)

    def unit(self, space: int, known: dict[str, bool]) -> Forced | None:
        """The first formula that forces something under the values fixed in `space`."""
        for i, table in enumerate(self.tables):
            allowed = table & space
            if allowed == space or not allowed:
                continue
            values = self.forced_in(allowed, known)
            if values:
                given = tuple((x, known[x]) for x in self.vars[i] if x in known)
                return Forced(i, given, values)
        return None

    def failing(self, space: int) -> int | None:
        for i, table in enumerate(self.tables):
            if not table & space:
                return i
        return None


def _case_split(t: _Tables, space: int, known: dict[str, bool], model: dict[str, bool]) -> CaseSplit | None:
    """The shortest refutation of a wrong value by forced steps, over all unfixed variables."""
    best: CaseSplit | None = None
    for var in t.names:
        if var in known:
            continue
        value = model[var]
        case, case_known = t.restrict(space, var, not value), {**known, var: not value}
        chain: list[Forced] = []
        while len(chain) <= MAX_CASE_STEPS and (best is None or len(chain) < len(best.chain)):
            fails = t.failing(case)
            if fails is not None:
                best = CaseSplit(var, value, tuple(chain), fails)
                break
            step = t.unit(case, case_known)
            if step is None:
                break
            chain.append(step)
            for x, v in step.values:
                case, case_known[x] = t.restrict(case, x, v), v
    return best


def _together(t: _Tables, space: int, known: dict[str, bool]) -> Together:
    live = [i for i, table in enumerate(t.tables) if table & space != space]
    for size in range(2, min(MAX_JOINT, len(live)) + 1):
        for combo in itertools.combinations(live, size):
            allowed = space
            for i in combo:
                allowed &= t.tables[i]
            values = t.forced_in(allowed, known)
            if values:
                return Together(combo, values)
    allowed = space
    for i in live:
        allowed &= t.tables[i]
    return Together(tuple(live), t.forced_in(allowed, known))


def deduction_steps(formulas: list[Formula], names: list[str]) -> tuple[list[Step], dict[str, bool]]:
    """Steps fixing every variable, and the one model; ValueError unless there is exactly
    one model or the puzzle is beyond the worked-solution bounds."""
    if len(names) > MAX_VARIABLES:
        raise ValueError(f"deduction worked solution: {len(names)} variables, more than {MAX_VARIABLES}")
    if len(formulas) > MAX_FORMULAS:
        raise ValueError(f"deduction worked solution: {len(formulas)} formulas, more than {MAX_FORMULAS}")
    t = _Tables(formulas, names)
    sat = t.full
    for table in t.tables:
        sat &= table
    if not sat or sat & (sat - 1):
        count = bin(sat).count("1")
        raise ValueError(f"deduction puzzle has {count} satisfying assignments over {names}; expected exactly 1")
    model = assignment_of(sat.bit_length() - 1, names)
    known: dict[str, bool] = {}
    space, steps = t.full, []
    while len(known) < len(names):
        step: Step | None = t.unit(space, known) or _case_split(t, space, known, model)
        if step is None:
            step = _together(t, space, known)
        values = step.values if not isinstance(step, CaseSplit) else ((step.var, step.value),)
        for x, v in values:
            space, known[x] = t.restrict(space, x, v), v
        steps.append(step)
    return steps, model
