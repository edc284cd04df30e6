"""Deduction family: reference compatibility, unique-model generation, solver, answer parsing.

The bit-parallel evaluator is checked against a naive one-assignment-at-a-time evaluator,
so the uniqueness guarantee does not rest on the code it is checking.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections import Counter
from fractions import Fraction

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peirce.eval.suites import reference_dir
from peirce.tasks.base import get_family
from peirce.tasks.deduction import (
    LEVELS,
    DeductionFamily,
    MAX_ATTEMPTS,
    _formula_sampler,
    _weighted_table,
    format_puzzle,
    parse_puzzle_text,
    render,
)
from peirce.tasks.logic_formula import (
    OPS,
    Bin,
    FormulaSyntaxError,
    Not,
    Var,
    parse_formula,
    solve_formulas,
    to_text,
    truth_table,
)

REF_DIR = str(reference_dir() / "deduction")
REF_LEVELS = [lv for lv in range(1, 6) if os.path.exists(f"{REF_DIR}/level{lv}-test.parquet")]
FAM = DeductionFamily()


def _rows(level: int) -> list[dict]:
    return pq.read_table(f"{REF_DIR}/level{level}-test.parquet").to_pylist()


def naive_eval(f, assignment: dict[str, bool]) -> bool:
    if isinstance(f, Var):
        return assignment[f.name]
    if isinstance(f, Not):
        return not naive_eval(f.child, assignment)
    a, b = naive_eval(f.left, assignment), naive_eval(f.right, assignment)
    return {"∧": a and b, "∨": a or b, "⊕": a != b, "→": (not a) or b, "↔": a == b}[f.op]


def naive_models(formulas: list[str], names: list[str]) -> list[dict[str, bool]]:
    parsed = [parse_formula(f) for f in formulas]
    out = []
    for values in itertools.product([False, True], repeat=len(names)):
        a = dict(zip(names, values))
        if all(naive_eval(f, a) for f in parsed):
            out.append(a)
    return out


def depth(f) -> int:
    if isinstance(f, Var):
        return 0
    if isinstance(f, Not):
        return 0 if f.bare else 1 + depth(f.child)
    return 1 + max(depth(f.left), depth(f.right))


# ----------------------------------------------------------------------------- reference data


@pytest.mark.skipif(not REF_LEVELS, reason="reference data not present")
@pytest.mark.parametrize("level", REF_LEVELS)
def test_reference_formulas_round_trip_byte_for_byte(level):
    for row in _rows(level):
        formulas = row["puzzle_spec"]["formulas"]
        assert [to_text(parse_formula(f)) for f in formulas] == formulas
        assert format_puzzle(formulas) == row["puzzle_text"]
        assert parse_puzzle_text(row["puzzle_text"]) == formulas


@pytest.mark.skipif(not REF_LEVELS, reason="reference data not present")
@pytest.mark.parametrize("level", REF_LEVELS)
def test_solver_matches_gold_on_every_reference_row(level):
    for row in _rows(level):
        assert FAM.solve(row["puzzle_text"]) == row["solution_text"], row["index"]
        assert FAM.answers_match(row["solution_text"], row["solution_text"]) is True


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("level,count", [(1, 40), (2, 30), (3, 20), (4, 8), (5, 3)])
def test_generated_puzzles_have_one_model_and_solve(level, count):
    n_vars, max_depth = LEVELS[level]
    names = [chr(ord("A") + i) for i in range(n_vars)]
    rng = random.Random(1000 + level)
    made = 0
    while made < count:
        out = FAM.generate_one(level, rng)
        if out is None:
            continue
        made += 1
        puzzle, text, solution = out
        assert puzzle["variables"] == names
        assert 3 <= len(puzzle["formulas"]) <= 6
        assert text == format_puzzle(puzzle["formulas"])
        assert re.fullmatch(r"(\(\d+\) [A-Z] is (True|False)\n)+", solution)
        for f in puzzle["formulas"]:
            assert depth(parse_formula(f)) <= max_depth
        if n_vars <= 8:  # the naive check is 2^n python evaluations per formula
            models = naive_models(puzzle["formulas"], names)
            assert len(models) == 1
            assert FAM.parse_answer(solution) == models[0]
        assert FAM.solve(text) == solution


def test_same_seed_same_puzzles_and_only_the_passed_rng_is_used():
    def draw(seed: int) -> list:
        rng = random.Random(seed)
        return [FAM.generate_one(level, rng) for level in (1, 2, 3) for _ in range(30)]

    random.seed(1)
    first = draw(7)
    random.seed(2)  # the global RNG must not matter
    assert draw(7) == first
    assert draw(8) != first
    assert any(x is not None for x in first)


@pytest.mark.parametrize("n_vars,max_depth", [(6, 2), (8, 3)])
def test_sampler_follows_recipe_probabilities(n_vars, max_depth):
    """Leaves negated with p=0.4, negation nodes with p=0.2, operators uniform (depth 2 is
    the table-lookup path, depth 3 adds a recursively built node above it)."""
    rng = random.Random(3)
    sample = _formula_sampler(n_vars, max_depth)
    leaves = neg_leaves = inner = neg_nodes = 0
    ops = dict.fromkeys(OPS, 0)

    def walk(f, d):
        nonlocal leaves, neg_leaves, inner, neg_nodes
        if d == max_depth:
            leaves += 1
            neg_leaves += isinstance(f, Not)
            return
        inner += 1
        if isinstance(f, Not):
            neg_nodes += 1
            walk(f.child, d + 1)
        else:
            ops[f.op] += 1
            walk(f.left, d + 1)
            walk(f.right, d + 1)

    for _ in range(4000):
        shape, _ = sample(rng.random)
        walk(parse_formula(render(shape)), 0)
    assert abs(neg_leaves / leaves - 0.4) < 0.02
    assert abs(neg_nodes / inner - 0.2) < 0.02
    share = [c / sum(ops.values()) for c in ops.values()]
    assert max(abs(s - 0.2) for s in share) < 0.02


def test_weighted_table_repeats_entries_in_exact_proportion():
    table = _weighted_table([(Fraction(1, 5), ["neg"]), (Fraction(4, 5), ["a", "b", "c", "d", "e"])])
    body, pad = table[:-1], table[-1]
    counts = Counter(body)
    assert Fraction(counts["neg"], len(body)) == Fraction(1, 5)
    assert {counts[x] for x in "abcde"} == {counts["a"]}  # uniform within the group
    assert pad == body[-1]  # u * len(body) rounding up to len(body) lands on a real entry


def test_generate_one_retries_rejections_from_the_same_rng():
    """A None from `generate_one` makes the dataset loop seed a fresh Random; at level 3
    ~98% of candidates are rejected, so the family retries internally and practically
    never returns None."""
    rng = random.Random(11)
    assert all(DeductionFamily().generate_one(3, rng) is not None for _ in range(50))
    assert MAX_ATTEMPTS >= 10_000


def test_sampler_truth_tables_match_naive_evaluation():
    rng = random.Random(5)
    names = [chr(ord("A") + i) for i in range(6)]
    index = {n: i for i, n in enumerate(names)}
    sample = _formula_sampler(6, 3)
    for _ in range(30):
        shape, table = sample(rng.random)
        f = parse_formula(render(shape))
        assert truth_table(f, index, 6) == table
        for j in range(64):
            a = {n: bool((j >> (5 - i)) & 1) for i, n in enumerate(names)}
            assert naive_eval(f, a) == bool((table >> j) & 1)


# ----------------------------------------------------------------------------- formulas

_names = st.sampled_from(["A", "B", "C", "D", "E"])
_formulas = st.recursive(
    _names.map(Var),
    lambda kids: st.one_of(
        kids.map(Not),
        st.builds(Bin, st.sampled_from(OPS), kids, kids),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_formulas)
def test_bit_parallel_evaluation_matches_naive(f):
    names = ["A", "B", "C", "D", "E"]
    table = truth_table(parse_formula(to_text(f)), {n: i for i, n in enumerate(names)}, 5)
    for j in range(32):
        a = {n: bool((j >> (4 - i)) & 1) for i, n in enumerate(names)}
        assert bool((table >> j) & 1) == naive_eval(f, a)


@pytest.mark.parametrize("text,expected", [
    ("¬(D)", "¬(D)"), ("¬E", "¬E"), ("¬(¬A)", "¬(¬A)"), ("¬((A ∧ B))", "¬((A ∧ B))"),
    ("  (A→¬B) ", "(A → ¬B)"), ("((A))", "A"), ("(A -> B)", "(A → B)"), ("~A", "¬A"),
])
def test_parser_accepts_reference_forms_and_aliases(text, expected):
    assert to_text(parse_formula(text)) == expected


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"), ("(A ∧ B", "expected ')'"), ("A ∧ B ∨ C", "operator chain"),
    ("(A ∧ )", "expected a variable"), ("A B", "trailing"), ("(A # B)", "unexpected character"),
])
def test_parser_errors_name_the_problem(text, fragment):
    with pytest.raises(FormulaSyntaxError, match=re.escape(fragment)):
        parse_formula(text)


def test_deep_nesting_is_a_clear_error_not_a_crash():
    with pytest.raises(FormulaSyntaxError, match="nesting deeper"):
        parse_formula("¬(" * 5000 + "A" + ")" * 5000)


# ----------------------------------------------------------------------------- solver errors


def test_solver_rejects_multiple_and_zero_models_and_bad_text():
    with pytest.raises(ValueError, match="4 satisfying assignments"):
        FAM.solve(format_puzzle(["(A ∨ B)", "(B ∨ C)", "(C → A)"]))
    with pytest.raises(ValueError, match="0 satisfying assignments"):
        FAM.solve(format_puzzle(["(A ∧ ¬A)", "B", "C"]))
    # C appears nowhere: a free variable, so two models over A..D
    with pytest.raises(ValueError, match="2 satisfying assignments"):
        FAM.solve(format_puzzle(["A", "B", "D"]))
    with pytest.raises(ValueError, match="formula 2"):
        FAM.solve(format_puzzle(["A", "(B ∧", "C"]))
    with pytest.raises(ValueError, match="must start with"):
        FAM.solve("Here are formulas:\n  - A\n")
    with pytest.raises(ValueError, match="line 2"):
        FAM.solve("Below are some nested formulas:\nA and B\n")
    assert solve_formulas([parse_formula("(A ↔ ¬B)"), parse_formula("A")], ["A", "B"]) == [
        {"A": True, "B": False}
    ]


# ----------------------------------------------------------------------------- answers


def test_parse_answer_is_tolerant_of_case_and_whitespace():
    gold = "(1) A is True\n(2) B is False\n"
    assert FAM.parse_answer(gold) == {"A": True, "B": False}
    assert FAM.answers_match("\n  (1)  a is TRUE \n\n(2) B   is false.\n", gold) is True
    assert FAM.answers_match("(2) B is False\n(1) A is True", gold) is True
    assert FAM.answers_match("(1) A is True\n(2) B is True\n", gold) is False
    assert FAM.answers_match("(1) A is True\n", gold) is False


@pytest.mark.parametrize("bad", [
    "", "   \n ", "(1) A is True\n...", "A = True", "(1) A is maybe", "(1) A is True\n(2) A is False",
    "The answer is (1) A is True", None, 42,
])
def test_parse_answer_returns_none_on_malformed(bad):
    assert FAM.parse_answer(bad) is None


@pytest.mark.timeout(20)
def test_parse_answer_on_a_megabyte_of_garbage_returns_none():
    rng = random.Random(0)
    alphabet = " \t\n()0123456789ABCis truefalse¬→∧"
    garbage = "".join(rng.choice(alphabet) for _ in range(1 << 20))
    assert FAM.parse_answer(garbage) is None
    assert FAM.parse_answer(" " * (1 << 20) + "x") is None
    assert FAM.parse_answer("(1) " + "A" * (1 << 20) + " is True") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_answer_never_raises(text):
    result = FAM.parse_answer(text)
    assert result is None or isinstance(result, dict)


def test_family_is_registered():
    fam = get_family("deduction")
    assert isinstance(fam, DeductionFamily) and fam.name == "deduction"
