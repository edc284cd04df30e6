"""Worked solution of a deduction puzzle: forced values, propagation, case splits, answer."""

from __future__ import annotations

from peirce.tasks.deduction import format_solution, parse_formula_texts, parse_puzzle_text
from peirce.tasks.worked.deduction_steps import CaseSplit, Forced, Step, Together, Value, deduction_steps
from peirce.tasks.worked.phrasing import Phrasing, capitalise, completion, join_names

SHOW_FORMULA_CHARS = 24  # quote a formula this short; longer ones are cited by number
SHOW_GIVEN = 3  # list the values a step uses up to this many, else "the values so far"

_INTRO = (
    "Fix the variables one at a time from the formulas.",
    "Look for formulas that force a value, then propagate.",
    "Find the one assignment that makes every formula true.",
)
_FORCED = ("{ref} forces {vals}.", "{ref} gives {vals}.", "From {ref}: {vals}.")
_FORCED_GIVEN = ("With {given}, {ref} forces {vals}.", "{ref} with {given} gives {vals}.",
                 "Since {given}, {ref} needs {vals}.")
_SO_FAR = ("the values so far", "what is fixed", "the known values")
_CASE = ("Try {var} = {other}: {chain}{ref} fails. So {var} = {value}.",
         "If {var} were {other}, {chain}{ref} would be false, so {var} = {value}.",
         "Case {var} = {other}: {chain}{ref} is false. Hence {var} = {value}.")
_CASE_STEP = ("{ref} forces {vals}, ", "{ref} gives {vals}, ", "then {ref} needs {vals}, ")
_TOGETHER = ("{refs} together allow only {vals}.", "Taken together, {refs} force {vals}.",
             "Only {vals} satisfies {refs}.")


def _vals(values: tuple[Value, ...]) -> str:
    return join_names([f"{x} = {v}" for x, v in values])


class _Writer:
    def __init__(self, formulas: list[str], phrasing: Phrasing):
        self.formulas, self.p = formulas, phrasing

    def ref(self, i: int) -> str:
        text = self.formulas[i]
        return text if len(text) <= SHOW_FORMULA_CHARS else f"formula {i + 1}"

    def forced(self, s: Forced) -> str:
        if s.given:
            given = _vals(s.given) if len(s.given) <= SHOW_GIVEN else self.p.pick(_SO_FAR)
            return self.p.say(_FORCED_GIVEN, ref=self.ref(s.formula), given=given, vals=_vals(s.values))
        return self.p.say(_FORCED, ref=self.ref(s.formula), vals=_vals(s.values))

    def case(self, s: CaseSplit) -> str:
        chain = "".join(self.p.say(_CASE_STEP, ref=self.ref(c.formula), vals=_vals(c.values)) for c in s.chain)
        return self.p.say(_CASE, var=s.var, other=not s.value, value=s.value, chain=chain, ref=self.ref(s.fails))

    def together(self, s: Together) -> str:
        if len(s.formulas) == len(self.formulas):
            refs = "all the formulas"
        else:
            refs = "formulas " + join_names([str(i + 1) for i in s.formulas])
        return self.p.say(_TOGETHER, refs=refs, vals=_vals(s.values))

    def step(self, s: Step) -> str:
        if isinstance(s, Forced):
            return self.forced(s)
        if isinstance(s, CaseSplit):
            return self.case(s)
        return self.together(s)


def worked_deduction(puzzle_text: str, phrasing: Phrasing) -> str:
    formulas = parse_puzzle_text(puzzle_text)
    parsed, names = parse_formula_texts(formulas)
    steps, model = deduction_steps(parsed, names)
    w = _Writer(formulas, phrasing)
    lines = [phrasing.pick(_INTRO)] + [capitalise(w.step(s)) for s in steps]
    return completion(lines, format_solution(model))
