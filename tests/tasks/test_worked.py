"""Worked solutions: every phrasing of every generated puzzle earns the full MAA reward,
stays short, and says only true things; hostile text fails fast with ValueError."""

from __future__ import annotations

import itertools
import random
import re
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peirce.model.embedded import status as embedded_status
from peirce.rewards.maa import DEFAULT_SCHEME, score_maa
from peirce.tasks.abduction import parse_puzzle_text as parse_abduction
from peirce.tasks.abduction_logic import Theory, parse_premise
from peirce.tasks.base import NoWorkedSolutionError, get_family
from peirce.tasks.dataset import generate_dataset
from peirce.tasks.deduction import parse_formula_texts, parse_puzzle_text as parse_deduction
from peirce.tasks.induction import apply_op, parse_puzzle_text as parse_induction
from peirce.tasks.logic_formula import Not, Var
from peirce.tasks.prompts import THINK_PREFILL
from peirce.tasks.worked.deduction_steps import CaseSplit, Forced, Together, deduction_steps
from peirce.tasks.worked.phrasing import N_VARIANTS, completion

FAMILIES = ("deduction", "induction", "abduction")
LEVELS = (1, 2, 3, 4, 5)
PER_CELL = 200  # 3 families x 5 levels x 200 = 3,000 puzzles, each in every variant
FULL = DEFAULT_SCHEME.format_ok + DEFAULT_SCHEME.answer_correct
MAX_CHARS = {1: 900, 2: 1200, 3: 1500, 4: 1800, 5: 2100}


def _tasks(name: str, level: int, n: int = PER_CELL, seed: int = 0):
    return generate_dataset(name, level, n, "train", seed=seed)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_variant_earns_the_full_reward_and_is_bounded(name, level):
    family = get_family(name)
    assert family.worked_variants == N_VARIANTS
    mixed = 0
    for task in _tasks(name, level):
        variants = [family.worked_solution(task.puzzle_text, variant=v) for v in range(N_VARIANTS)]
        drawn = family.worked_solution(task.puzzle_text, rng=random.Random(task.seed))
        assert drawn == family.worked_solution(task.puzzle_text, rng=random.Random(task.seed))  # deterministic
        assert family.worked_solution(task.puzzle_text) == variants[0]
        assert len(set(variants)) == N_VARIANTS, variants  # variants differ
        mixed += drawn not in variants
        for text in variants + [drawn]:
            result = score_maa(name, THINK_PREFILL + text, task.solution_text)
            assert result.reward == FULL and result.correct, (task.puzzle_text, text)
            assert len(text) <= MAX_CHARS[level], (len(text), text)
            assert text.startswith("\n") and text.count("\n</think>\n<answer>\n") == 1
    if name != "induction" or level > 1:  # induction L1 traces have too few steps to mix much
        assert mixed > PER_CELL // 4  # rng phrasings mix templates across steps


def test_reference_puzzles_get_worked_solutions():
    """The reference text format alone is enough: a few shipped reference-format rows."""
    cases = {
        "deduction": ("Below are some nested formulas:\n  - (D ⊕ B)\n  - (A ∧ D)\n  - (A ⊕ C)\n  - (¬D → ¬D)\n"
                      "Please list the truth value of each variable\n",
                      "(1) A is True\n(2) B is False\n(3) C is False\n(4) D is True\n"),
        "induction": ("Given the following sequence with a missing term,\n[3, 6, 9, '?', 15]\n"
                      "What is the value at the question mark?", "12"),
        "abduction": ("premises: ['(A) => B', '((B AND (NOT C))) => G', '((B AND C)) => G', '(Z) => H']\n"
                      "known_atoms: ['A']\ngoals: ['G', 'H']\nFor each goal, ...", "(1) G is reachable\n(2) H is unreachable"),
    }
    for name, (text, gold) in cases.items():
        out = get_family(name).worked_solution(text)
        assert score_maa(name, THINK_PREFILL + out, gold).reward == FULL, out
    assert "either way" in get_family("abduction").worked_solution(cases["abduction"][0])  # the case split


def test_a_goal_beyond_one_atom_case_splits_still_gets_a_true_verdict():
    """G needs a split on p and then on q: one-atom splits cannot derive it, so the trace
    falls back to the refutation sentence, and the answer is still right."""
    bodies = ["(p AND q)", "(p AND (NOT q))", "((NOT p) AND q)", "((NOT p) AND (NOT q))"]
    premises = ", ".join(f"'({b}) => G'" for b in bodies)
    text = f"premises: [{premises}, '(Z) => H']\nknown_atoms: ['A']\ngoals: ['G', 'H']\nFor each goal, ..."
    out = get_family("abduction").worked_solution(text)
    assert "Assuming G false contradicts the premises in every case." in out
    assert score_maa("abduction", THINK_PREFILL + out, "(1) G is reachable\n(2) H is unreachable").reward == FULL


def test_a_long_abduction_chain_is_worked_in_full():
    premises = ", ".join(f"'(A{i}) => A{i + 1}'" for i in range(399))
    text = f"premises: [{premises}]\nknown_atoms: ['A0']\ngoals: ['A399', 'B']\nFor each goal, ..."
    out = get_family("abduction").worked_solution(text)
    assert score_maa("abduction", THINK_PREFILL + out, "(1) A399 is reachable\n(2) B is unreachable").reward == FULL
    assert out.count(" from A") == 399


@pytest.mark.skipif(not embedded_status().ready, reason="embedded model not prepared (make setup)")
def test_token_lengths_with_the_embedded_tokenizer():
    """The SFT budget: short at L1 (the model trains on CPU), bounded at every level.
    `tokenizers` directly: the same counts as transformers' AutoTokenizer, without its
    10 s import."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(embedded_status().path / "tokenizer.json"))
    for name in FAMILIES:
        family = get_family(name)
        for level in (1, 3, 5):
            counts = [len(tok.encode(family.worked_solution(t.puzzle_text, variant=i % N_VARIANTS),
                                     add_special_tokens=False).ids) for i, t in enumerate(_tasks(name, level, 60))]
            assert max(counts) <= 300 + 80 * level, (name, level, max(counts))
            if level == 1:
                assert statistics.median(counts) <= 160, (name, statistics.median(counts))


# ---------------------------------------------------------------- the traces say true things


def _naive(f, a: dict[str, bool]) -> bool:
    if isinstance(f, Var):
        return a[f.name]
    if isinstance(f, Not):
        return not _naive(f.child, a)
    x, y = _naive(f.left, a), _naive(f.right, a)
    return {"∧": x and y, "∨": x or y, "⊕": x != y, "→": (not x) or y, "↔": x == y}[f.op]


def _consistent(formulas, idx, names, known, values_must):
    """Brute force: every assignment extending `known` that satisfies formulas `idx`
    gives `values_must`, i.e. the step is sound."""
    free = [x for x in names if x not in known]
    for bits in itertools.product((False, True), repeat=len(free)):
        a = {**known, **dict(zip(free, bits))}
        if all(_naive(formulas[i], a) for i in idx) and any(a[x] != v for x, v in values_must):
            return False
    return True


def test_deduction_steps_are_sound_by_brute_force():
    for level, n in ((1, 80), (2, 60), (3, 20)):
        for task in _tasks("deduction", level, n, seed=3):
            formulas, names = parse_formula_texts(parse_deduction(task.puzzle_text))
            steps, model = deduction_steps(formulas, names)
            known: dict[str, bool] = {}
            for s in steps:
                if isinstance(s, Forced):
                    assert dict(s.given) == {x: v for x, v in known.items() if x in dict(s.given)}
                    assert _consistent(formulas, [s.formula], names, dict(s.given), s.values), s
                    fixed = s.values
                elif isinstance(s, CaseSplit):
                    case = {**known, s.var: not s.value}
                    idx = [c.formula for c in s.chain] + [s.fails]
                    assert _consistent(formulas, idx, names, case, [(s.var, s.value)]), s  # no model: vacuous
                    fixed = ((s.var, s.value),)
                else:
                    assert isinstance(s, Together)
                    assert _consistent(formulas, list(s.formulas), names, known, s.values), s
                    fixed = s.values
                for x, v in fixed:
                    assert x not in known and model[x] == v
                    known[x] = v
            assert known == model


_FROM = re.compile(r"^([A-Za-z]\w*) from (.+)\.$")
_NEEDS = re.compile(r"^([A-Za-z]\w*) needs (.+)\.$")
_KNOWN = re.compile(r"^(.+) known\.$")
_DEAD = re.compile(r"^(.+): no premise, not known\.$")


def _names(text: str) -> list[str]:
    return [x for x in re.split(r", | and ", text)]


def test_abduction_claims_match_exact_entailment():
    """Variant 0 lines: 'X from ...' only for entailed X, 'X needs ...' only for
    non-entailed X, 'known' atoms are known, dead ends have no premise."""
    checked = 0
    for level in LEVELS:
        for task in _tasks("abduction", level, 60, seed=4):
            puzzle = parse_abduction(task.puzzle_text)
            premises = [parse_premise(p) for p in puzzle["premises"]]
            theory = Theory(premises, puzzle["known_atoms"])
            trace = get_family("abduction").worked_solution(task.puzzle_text, variant=0).split("</think>")[0]
            for line in trace.strip().split("\n")[1:]:
                if m := _FROM.match(line):
                    assert theory.entails(m.group(1)), line
                elif m := _NEEDS.match(line):
                    assert not theory.entails(m.group(1)), line
                elif m := _DEAD.match(line):
                    for x in _names(m.group(1)):
                        assert x not in theory.known and x not in theory.by_head, line
                elif m := _KNOWN.match(line):
                    assert set(_names(m.group(1))) <= theory.known, line
                else:
                    continue
                checked += 1
    assert checked > 2000


_STEP = re.compile(r"(-?\d+)→(-?\d+) (\+|-|x|//)(-?\d+)")
_CALC = re.compile(r"(-?\d+) (\+|-|×|//) (-?\d+) = (-?\d+)")


def test_induction_steps_and_arithmetic_are_right():
    kinds = {"+": lambda v: ("+", v), "-": lambda v: ("+", -v), "x": lambda v: ("*", v), "×": lambda v: ("*", v),
             "//": lambda v: ("//", v)}
    for level in LEVELS:
        for task in _tasks("induction", level, 80, seed=5):
            text = get_family("induction").worked_solution(task.puzzle_text, variant=0)
            steps = _STEP.findall(text)
            calcs = _CALC.findall(text)
            assert steps and calcs, text
            for a, b, k, v in steps:
                assert apply_op(kinds[k](int(v)), int(a)) == int(b), text
            for a, k, v, b in calcs:
                assert apply_op(kinds[k](int(v)), int(a)) == int(b), text
            seq = parse_induction(task.puzzle_text)
            m = seq.index(None)
            assert int(calcs[0][0]) == seq[m - 1] and int(calcs[0][3]) == int(task.solution_text)


# ---------------------------------------------------------------- API and hostile input


def test_families_without_worked_solutions_say_so():
    with pytest.raises(NoWorkedSolutionError, match="'uppercase' has no worked solutions"):
        get_family("uppercase").worked_solution("Say something.")
    assert issubclass(NoWorkedSolutionError, NotImplementedError)
    assert get_family("uppercase").worked_variants == 0


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_variant_arguments(name):
    text = _tasks(name, 1, 1)[0].puzzle_text
    family = get_family(name)
    for bad in (-1, N_VARIANTS, True, 1.0, "0"):
        with pytest.raises(ValueError, match="variant must be an int in 0..2"):
            family.worked_solution(text, variant=bad)
    with pytest.raises(ValueError, match="variant or rng, not both"):
        family.worked_solution(text, variant=0, rng=random.Random(0))


def test_a_tag_in_the_trace_is_refused():
    with pytest.raises(ValueError, match="'</think>'"):
        completion(["A from </think>."], "(1) A is reachable")
    with pytest.raises(ValueError, match="'<answer>'"):
        completion(["fine"], "<answer>1")


_LETTERS = [chr(65 + i) for i in range(20)]
HOSTILE = {
    "deduction": [
        "", "garbage", "Below are some nested formulas:\n  - (A ∧\nPlease list the truth value of each variable\n",
        "Below are some nested formulas:\n  - (A ∨ B)\nPlease list the truth value of each variable\n",  # 3 models
        "Below are some nested formulas:\n  - (A ∧ ¬A)\n",  # no model
        "Below are some nested formulas:\n  - " + "(" * 5000 + "A" + ")" * 5000 + "\n",
        "Below are some nested formulas:\n" + "".join(f"  - {x}\n" for x in _LETTERS),  # 20 variables
        "Below are some nested formulas:\n" + "  - A\n" * 40,  # 40 formulas
        "Below are some nested formulas:\n  - (A </think> B)\n",
    ],
    "induction": [
        "", "Given the following sequence,\n['1', '2']\nWhat is the value at the question mark?",
        "Given the following sequence,\n['1', '?', '?']\nWhat is the value at the question mark?",
        "Given the following sequence,\n['1', '2', 'x', '?']\nWhat is the value at the question mark?",
        "Given the following sequence,\n['5', '1', '1000', '3', '77', '-40', '?']\nWhat is the value at the question mark?",
        "Given the following sequence,\n[" + ", ".join(["'1'"] * 1500) + ", '?']\nWhat is the value at the question mark?",
    ],
    "abduction": [
        "", "premises: []\nknown_atoms: []\ngoals: []\n", "premises: ['(A => B']\nknown_atoms: []\ngoals: ['B']\n",
        "premises: ['(A) => AND']\nknown_atoms: ['A']\ngoals: ['B']\n",
        "premises: [" + ", ".join(["'(A) => B'"] * 401) + "]\nknown_atoms: ['A']\ngoals: ['B']\n",
        "premises: ['" + "(" * 300 + "A" + ")" * 300 + " => B']\nknown_atoms: ['A']\ngoals: ['B']\n",
        "premises: ['(A) => B']\nknown_atoms: ['</think>']\ngoals: ['B']\n",
    ],
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", FAMILIES)
def test_hostile_puzzle_text_raises_value_error_fast(name):
    family = get_family(name)
    for text in HOSTILE[name] + [None, b"bytes", 42] + [t for other in FAMILIES if other != name for t in
                                                      [_tasks(other, 1, 1)[0].puzzle_text]]:
        with pytest.raises(ValueError):
            family.worked_solution(text)


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(FAMILIES), text=st.text(max_size=300))
def test_random_text_raises_value_error(name, text):
    with pytest.raises(ValueError):
        get_family(name).worked_solution(text)
