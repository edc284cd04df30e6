"""Why each abduction goal is (un)reachable, as data a worked solution can narrate.

Reachable: a derivation by forward chaining from the known atoms, with lemmas proved by
cases on one atom (`(S AND c) => X` and `(S AND (NOT c)) => X` give X from S whichever
value c has), repeated until the goals are derived (one-atom case splits, iterated: what
forward chaining alone cannot do with NOT in bodies). Unreachable: the exact solver's
counter-model, a model of the premises with the goal false; every premise that concludes
a false atom has a body false in it, and the literals that make it false are the reason.
Both reuse `abduction_logic` (closure, tableau, three-valued evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peirce.tasks.abduction_logic import Formula, Premise, Theory, atoms_of, evaluate, forward_closure

Literal = tuple[str, bool]  # (atom, the value the reasoning needs it to have)
MAX_ROUNDS = 8  # case-split rounds before a goal's proof is left unexplained
MAX_PIVOTS = 48
MAX_PREMISES = 400  # larger puzzles get no worked solution (the trace would not be short)


def true_witness(f: Formula, a: dict[str, bool]) -> list[Literal]:
    """Literals of `a` that make `f` True (f must evaluate True under `a`)."""
    if type(f) is str:
        return [(f, True)]
    if f[0] == "NOT":
        return [(x, not v) for x, v in false_witness(f[1], a)]
    if f[0] == "AND":
        return true_witness(f[1], a) + true_witness(f[2], a)
    part = f[1] if evaluate(f[1], a) is True else f[2]
    return true_witness(part, a)


def false_witness(f: Formula, a: dict[str, bool]) -> list[Literal]:
    """Literals, each failing under `a`, whose failure makes `f` False (f must evaluate
    False): what `f` would need. For AND, the false part with the shorter reason."""
    if type(f) is str:
        return [(f, True)]
    if f[0] == "NOT":
        return [(x, not v) for x, v in true_witness(f[1], a)]
    if f[0] == "OR":
        return false_witness(f[1], a) + false_witness(f[2], a)
    parts = [false_witness(g, a) for g in f[1:] if evaluate(g, a) is False]
    return min(parts, key=len)


@dataclass
class Context:
    """One forward-closure run: what it derived (premise index, literals the body
    needed), lemmas it started from, its case assumption, and the run it extends."""

    assignment: dict[str, bool]
    derived: dict[str, tuple[int, list[Literal]]] = field(default_factory=dict)
    lemmas: dict[str, "Lemma | Refuted"] = field(default_factory=dict)
    assumption: Literal | None = None
    parent: "Context | None" = None


@dataclass
class Lemma:
    """`atom` holds whether `pivot` is True (`if_true`) or False (`if_false`)."""

    pivot: str
    if_true: Context
    if_false: Context


@dataclass
class Refuted:
    """The atom holds because assuming it False (`case`) derives it through premise
    `premise`, whose body needs `needs`: a contradiction."""

    case: Context
    premise: int
    needs: list[Literal]


def _run(theory: Theory, parent: Context | None, start: dict[str, bool], **kw) -> Context:
    ctx = Context(assignment={}, parent=parent, **kw)

    def on_derive(head: str, i: int, a: dict[str, bool]) -> None:
        ctx.derived[head] = (i, true_witness(theory.premises[i][0], a))

    ctx.assignment = forward_closure(theory.premises, start, theory.watch, on_derive)
    return ctx


def _contradiction(theory: Theory, ctx: Context) -> int | None:
    """A premise concluding the one False atom (the case assumption) from a True body."""
    a = ctx.assignment
    for i, (body, head) in enumerate(theory.premises):
        if a.get(head) is False and evaluate(body, a) is True:
            return i
    return None


def prove(theory: Theory, entailed: list[str]) -> Context:
    """The last context of the case-split rounds: it derives every goal in `entailed`
    unless that needs deeper case splits (then the goal is missing from it)."""
    ctx = _run(theory, None, dict.fromkeys(theory.known, True))
    pivots = sorted({x for body, _ in theory.premises for x in _negated_atoms(body)})[:MAX_PIVOTS]
    for _ in range(MAX_ROUNDS):
        if all(g in ctx.assignment for g in entailed):
            break
        lemmas = _round(theory, ctx, pivots)
        if not lemmas:
            break
        ctx = _run(theory, ctx, {**ctx.assignment, **dict.fromkeys(lemmas, True)}, lemmas=lemmas)
    return ctx


def _round(theory: Theory, ctx: Context, pivots: list[str]) -> dict[str, Lemma | Refuted]:
    """Atoms true in both cases of some pivot, keeping only those that forward chaining
    from `ctx` and the lemmas kept so far does not already give (so a trace says "K by
    cases on T" once, and then "LW from H and K", not a case split for LW as well). A
    pivot whose False case contradicts itself is a lemma on its own."""
    lemmas: dict[str, Lemma | Refuted] = {}
    reach = ctx.assignment
    for c in pivots:
        if c in reach:
            continue
        cases = [_run(theory, ctx, {**ctx.assignment, c: v}, assumption=(c, v)) for v in (True, False)]
        bad = _contradiction(theory, cases[1])  # only the False case has a False atom
        if bad is not None:
            lemmas[c] = Refuted(cases[1], bad, true_witness(theory.premises[bad][0], cases[1].assignment))
            reach = forward_closure(theory.premises, {**reach, c: True}, theory.watch)
            continue
        for atom in cases[0].derived:  # derivation order: causes before consequences
            if atom not in reach and cases[1].assignment.get(atom) is True:
                lemmas[atom] = Lemma(c, *cases)
                reach = forward_closure(theory.premises, {**reach, atom: True}, theory.watch)
    return lemmas


def _negated_atoms(f: Formula) -> set[str]:
    """Atoms under a NOT: only they can make a case split useful (with an atom that only
    occurs positively, its False case derives nothing new)."""
    if type(f) is str:
        return set()
    if f[0] == "NOT":
        return atoms_of(f[1])
    return _negated_atoms(f[1]) | _negated_atoms(f[2])


def completed_countermodel(theory: Theory, goal: str, atoms: set[str]) -> dict[str, bool] | None:
    """The tableau's model with `goal` False, every atom given a value (missing = True)."""
    model = theory.countermodel(goal)
    if model is None:
        return None
    return {x: model.get(x, True) for x in atoms}


def all_atoms(premises: list[Premise], known: list[str], goals: list[str]) -> set[str]:
    out = set(known) | set(goals)
    for body, head in premises:
        out.add(head)
        atoms_of(body, out)
    return out
