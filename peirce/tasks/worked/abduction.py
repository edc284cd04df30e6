"""Worked solution of an abduction puzzle: each goal traced back to the known atoms
(reachable) or to what blocks it (unreachable), then the answer lines."""

from __future__ import annotations

from peirce.tasks.abduction import parse_premises, parse_puzzle_text, render_solution
from peirce.tasks.abduction_logic import Theory
from peirce.tasks.worked.abduction_proof import (
    MAX_PREMISES,
    Context,
    Literal,
    Refuted,
    all_atoms,
    completed_countermodel,
    false_witness,
    prove,
)
from peirce.tasks.worked.phrasing import Phrasing, capitalise, completion, join_names

_INTRO = ("Check each goal backwards.", "Trace each goal back.", "What does each goal need?")
_FROM = ("{atom} from {lits}.", "{atom} follows from {lits}.", "{lits} give {atom}.")
_CASES = ("{atom} either way: if {c}, from {t}; if not {c}, from {f}.",
          "{atom} holds whether {c} is true ({t}) or false ({f}).",
          "Split on {c}: {t} give {atom}, and so do {f}.")
_REFUTED = ("{atom} by contradiction: if not {atom}, {atom} follows from {lits}.",
            "Suppose not {atom}: then {lits} give {atom}, so {atom}.",
            "{atom} must hold: without it, {lits} still give {atom}.")
_IN_CASE = ("if {c}: ", "when {c}: ", "(case {c}) ")
_KNOWN = ("{atoms} known.", "Known: {atoms}.", "{atoms} are given.")
_GOAL_KNOWN = ("{g} is a known atom.", "{g} is known.", "{g} is given.")
_REACHABLE = ("So {g} is reachable.", "{g} is reachable.", "Hence {g} is reachable.")
_BY_REFUTATION = ("Assuming {g} false contradicts the premises in every case.",
                  "{g} false is impossible: every case breaks a premise.",
                  "No model of the premises has {g} false.")
_NEEDS = ("{atom} needs {alts}.", "{atom} requires {alts}.", "To get {atom} we need {alts}.")
_ONLY_ITSELF = ("{atom} only follows from itself.", "{atom} needs {atom} first: a cycle.",
                "Only {atom} gives {atom}.")
_DEAD = ("{atoms}: no premise, not known.", "Nothing gives {atoms}.", "{atoms} cannot be derived.")
_MAY_BE_TRUE = ("{atoms} may be true.", "{atoms} can be true.", "Nothing rules out {atoms}.")
_UNREACHABLE = ("So {g} is unreachable.", "{g} is unreachable.", "Hence {g} is unreachable.")


def _lit(lit: Literal) -> str:
    return lit[0] if lit[1] else f"not {lit[0]}"


def _lits(lits: list[Literal]) -> str:
    return join_names(list(dict.fromkeys(_lit(x) for x in lits)))


class _Writer:
    def __init__(self, theory: Theory, phrasing: Phrasing):
        self.t, self.p = theory, phrasing
        self.lines: list[str] = []
        self.done: set[tuple[int, str]] = set()  # (context, atom) already explained

    def say(self, templates: tuple[str, ...], **fields: object) -> None:
        self.lines.append(capitalise(self.p.say(templates, **fields)))

    # ------------------------------------------------------------ reachable

    def reachable(self, goal: str, ctx: Context) -> None:
        if goal in self.t.known:
            self.say(_GOAL_KNOWN, g=goal)
            return
        if goal not in ctx.assignment:  # needs deeper case splits than `prove` tries
            self.say(_BY_REFUTATION, g=goal)
        else:
            leaves: list[str] = []
            self.explain(goal, ctx, leaves)
            if leaves:
                self.say(_KNOWN, atoms=join_names(leaves))
        self.say(_REACHABLE, g=goal)

    def explain(self, atom: str, ctx: Context, leaves: list[str]) -> None:
        """Lines saying why `atom` is True in `ctx`, goal first, then what it used."""
        owner: Context | None = ctx
        while owner is not None and atom not in owner.derived and atom not in owner.lemmas:
            if owner.assumption is not None and owner.assumption[0] == atom:
                return  # the case assumption itself
            owner = owner.parent
        if owner is None:  # a known atom
            if atom not in leaves:
                leaves.append(atom)
            return
        key = (id(owner), atom)
        if key in self.done:
            return
        self.done.add(key)
        if atom in owner.derived:
            lits = owner.derived[atom][1]
            prefix = self.p.say(_IN_CASE, c=_lit(owner.assumption)) if owner.assumption else ""
            self.lines.append(capitalise(prefix + self.p.say(_FROM, atom=atom, lits=_lits(lits))))
            self.explain_all(lits, owner, leaves)
            return
        lemma = owner.lemmas[atom]
        if isinstance(lemma, Refuted):
            self.say(_REFUTED, atom=atom, lits=_lits(lemma.needs))
            self.explain_all(lemma.needs, lemma.case, leaves)
            return
        t_lits, f_lits = lemma.if_true.derived[atom][1], lemma.if_false.derived[atom][1]
        self.say(_CASES, atom=atom, c=lemma.pivot, t=_lits(t_lits), f=_lits(f_lits))
        self.explain_all(t_lits, lemma.if_true, leaves)
        self.explain_all(f_lits, lemma.if_false, leaves)

    def explain_all(self, lits: list[Literal], ctx: Context, leaves: list[str]) -> None:
        for x, v in lits:
            if v:  # a False literal is a case assumption: nothing to explain
                self.explain(x, ctx, leaves)

    # ------------------------------------------------------------ unreachable

    def unreachable(self, goal: str, model: dict[str, bool]) -> None:
        """Breadth-first from the goal: each false atom and what its premises would need
        (all failing in the counter-model), then the dead ends."""
        queue, seen = [goal], {goal}
        dead: list[str] = []
        known: list[str] = []
        free: list[str] = []
        for atom in queue:  # grows while iterating
            bodies = self.t.by_head.get(atom, [])
            if not bodies:
                dead.append(atom)
                continue
            needs = list(dict.fromkeys(lit for body in bodies for lit in false_witness(body, model)))
            needs = [x for x in needs if x != (atom, True)]  # support through itself is no support
            if needs:
                self.say(_NEEDS, atom=atom, alts=" or ".join(_lit(x) for x in needs))
            else:
                self.say(_ONLY_ITSELF, atom=atom)
            for x, v in needs:
                if v and x not in seen:
                    seen.add(x)
                    queue.append(x)
                elif not v:
                    group = known if x in self.t.known else free
                    if x not in group:
                        group.append(x)
        for group, templates in ((known, _KNOWN), (free, _MAY_BE_TRUE), (dead, _DEAD)):
            if group:
                self.say(templates, atoms=join_names(group))
        self.say(_UNREACHABLE, g=goal)


def worked_abduction(puzzle_text: str, phrasing: Phrasing) -> str:
    puzzle = parse_puzzle_text(puzzle_text)
    premises = parse_premises(puzzle["premises"], MAX_PREMISES)  # more would not make a short trace
    goals, known = list(puzzle["goals"]), list(puzzle["known_atoms"])
    theory = Theory(premises, known)
    atoms = all_atoms(premises, known, goals)
    w = _Writer(theory, phrasing)
    w.lines.append(phrasing.pick(_INTRO))
    try:
        models = {g: completed_countermodel(theory, g, atoms) for g in goals}
        ctx = prove(theory, [g for g in goals if models[g] is None])
        for g in goals:
            model = models[g]
            if model is None:
                w.reachable(g, ctx)
            else:
                w.unreachable(g, model)
    except RecursionError:
        raise ValueError("puzzle too large for a worked solution (derivation nested too deep)") from None
    labels = [models[g] is None for g in goals]
    return completion(w.lines, render_solution(goals, labels))
