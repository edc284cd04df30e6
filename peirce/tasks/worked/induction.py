"""Worked solution of an induction puzzle: the steps between terms, the cycle, the answer.

The rule is the one `InductionFamily.solve` answers with (the simplest fitting rule of
`induction_rules`), so trace and answer always agree with the solver.
"""

from __future__ import annotations

from peirce.tasks.induction import Masked, Op, RuleFit, apply_op, induction_rules, op_text, parse_puzzle_text
from peirce.tasks.worked.phrasing import Phrasing, completion

_INTRO = ("Look at how each term changes.", "Find the operation between neighbouring terms.",
          "Compare each term with the next.")
_STEPS = ("Steps: {steps}.", "Changes: {steps}.", "Term to term: {steps}.")
_SAME = ("Every step is {op}.", "The step is always {op}.", "The rule is {op} each time.")
_CYCLE = ("The steps repeat every {k}: {ops}.", "A cycle of {k} operations: {ops}.", "The pattern {ops} repeats.")
_FLOOR = ("(//d divides by d, rounding down, never below 1.)", "(//d: divide by d and round down, at least 1.)",
          "(//d is division by d rounded down, minimum 1.)")
_NEXT = ("Next step {op}: {calc}.", "So ? = {calc}.", "The next step is {op}, so {calc}.")
_MIDDLE = ("? = {calc1}; check: {calc2}.", "So ? = {calc1}, and then {calc2}.", "Fill in {calc1}; it fits: {calc2}.")
_DIFFS = ("Differences: {diffs}.", "The differences are {diffs}.", "Gaps between terms: {diffs}.")
_GROW = ("They change by {e} each time.", "Each difference is {e} more than the last.",
         "The differences go up by {e}.")
_NEXT_DIFF = ("Next difference {d}: {calc}.", "So the next gap is {d}: {calc}.", "The next difference is {d}, so {calc}.")


def _calc(op: Op, x: int) -> str:
    kind, v = op
    y = apply_op(op, x)
    if kind == "+":
        return f"{x} + {v} = {y}" if v >= 0 else f"{x} - {-v} = {y}"
    if kind == "*":
        return f"{x} × {v} = {y}"
    return f"{x} // {v} = {y}"


def _cycle_lines(seq: Masked, m: int, fit: RuleFit, p: Phrasing) -> list[str]:
    ops = fit.ops
    assert ops is not None
    k = len(ops)
    steps = [f"{seq[t]}→{seq[t + 1]} {op_text(ops[t % k])}" for t in range(len(seq) - 1)
             if seq[t] is not None and seq[t + 1] is not None]
    lines = [p.say(_STEPS, steps=", ".join(steps))]
    shown = [op_text(op) if op is not None else "?" for op in ops]
    if k == 1:
        lines.append(p.say(_SAME, op=shown[0]))
    else:
        lines.append(p.say(_CYCLE, k=k, ops=", ".join(shown)))
    if any(op is not None and op[0] == "//" for op in ops):
        lines.append(p.pick(_FLOOR))
    op_in = ops[(m - 1) % k]
    if m == len(seq) - 1:
        lines.append(p.say(_NEXT, op=op_text(op_in), calc=_calc(op_in, seq[m - 1])))
    else:
        value = apply_op(op_in, seq[m - 1])
        lines.append(p.say(_MIDDLE, calc1=_calc(op_in, seq[m - 1]), calc2=_calc(ops[m % k], value)))
    return lines


def _second_order_lines(seq: Masked, m: int, fit: RuleFit, p: Phrasing) -> list[str]:
    assert fit.second_order is not None and fit.value is not None
    step = fit.second_order[2]
    diffs = [str(seq[t + 1] - seq[t]) for t in range(len(seq) - 1) if seq[t] is not None and seq[t + 1] is not None]
    lines = [p.say(_DIFFS, diffs=", ".join(diffs)), p.say(_GROW, e=step)]
    d_in = fit.value - seq[m - 1]
    if m == len(seq) - 1:
        lines.append(p.say(_NEXT_DIFF, d=d_in, calc=_calc(("+", d_in), seq[m - 1])))
    else:
        lines.append(p.say(_MIDDLE, calc1=_calc(("+", d_in), seq[m - 1]),
                           calc2=_calc(("+", seq[m + 1] - fit.value), fit.value)))
    return lines


def worked_induction(puzzle_text: str, phrasing: Phrasing) -> str:
    seq = parse_puzzle_text(puzzle_text)
    m = seq.index(None)
    fit = next((f for f in induction_rules(seq) if f.value is not None), None)
    if fit is None:
        raise ValueError("no rule in the search space fits the visible terms")
    body = _cycle_lines if fit.ops is not None else _second_order_lines
    lines = [phrasing.pick(_INTRO), *body(seq, m, fit, phrasing)]
    return completion(lines, str(fit.value))
